package kdnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/shareddata"
	"github.com/kdstub/kdstub/kdproto"
)

const (
	captureFile   = "testdata/kdnet/windbg-win10-10586-bootdbg-key-8.8.8.8.pcapng.gz"
	captureKey    = "8.8.8.8"
	captureFrames = 955
)

// captureDatagrams returns every frame of the shared capture (skips when it is absent, fails under CI).
func captureDatagrams(tb testing.TB) []*Frame {
	tb.Helper()
	f, err := os.Open(shareddata.Require(tb, captureFile))
	require.NoError(tb, err)
	defer f.Close()
	cr, err := NewCaptureReader(f)
	require.NoError(tb, err)
	var frames []*Frame
	for {
		fr, err := cr.Next()
		if errors.Is(err, io.EOF) {
			return frames
		}
		require.NoError(tb, err)
		fr.Payload = append([]byte(nil), fr.Payload...)
		frames = append(frames, fr)
	}
}

// TestGoldenCapture checks the whole KDNET stack against real WinDbg <-> Windows traffic: every datagram
// verifies, the handshake yields the data key, every KD packet parses into its typed body, and re-encoding
// from that body and re-sealing reproduces each datagram byte for byte.
func TestGoldenCapture(t *testing.T) {
	frames := captureDatagrams(t)
	require.Len(t, frames, captureFrames)
	k, err := ParseKey(captureKey)
	require.NoError(t, err)
	keys := NewKeys(k)
	var handshakes, data, control, bodies int
	for _, fr := range frames {
		require.True(t, fr.UDP, "frame %d is not UDP", fr.N)
		_, ch, err := PeekHeader(fr.Payload)
		require.NoError(t, err, "frame %d", fr.N)
		dg, err := keys.Open(fr.Payload)
		require.NoError(t, err, "frame %d does not verify", fr.N)

		var reencoded []byte
		if ch == ChannelControl {
			control++
			switch BodyKind(dg.Payload) {
			case "poke":
				require.False(t, dg.FromHost, "frame %d", fr.N)
				var p Poke
				require.NoError(t, p.UnmarshalBinary(dg.Payload), "frame %d", fr.N)
				reencoded, err = p.MarshalBinary()
			case "response":
				require.True(t, dg.FromHost, "frame %d", fr.N)
				var r Response
				require.NoError(t, r.UnmarshalBinary(dg.Payload), "frame %d", fr.N)
				reencoded, err = r.MarshalBinary()
				require.NoError(t, err)
				// The data key derived from this response must open the data channel that follows.
				dk, err := DeriveDataKey(k, dg.Payload)
				require.NoError(t, err)
				keys.SetDataKey(dk)
				handshakes++
			default:
				t.Fatalf("frame %d: unexpected control body % x", fr.N, dg.Payload)
			}
			require.NoError(t, err)
		} else {
			data++
			p, err := kdproto.DecodePacket(dg.Payload)
			require.NoError(t, err, "frame %d: KD packet", fr.N)
			body, err := p.Body()
			require.NoError(t, err, "frame %d: KD body (%v)", fr.N, p)
			if p.IsData() {
				require.NotNil(t, body, "frame %d", fr.N)
				bodies++
				payload, err := kdproto.EncodeBody(body)
				require.NoError(t, err, "frame %d", fr.N)
				typ, err := kdproto.BodyPacketType(body)
				require.NoError(t, err, "frame %d", fr.N)
				require.Equal(t, p.Type, typ, "frame %d", fr.N)
				p = kdproto.NewDataPacket(typ, p.ID, payload)
			}
			reencoded, err = p.MarshalBinary()
			require.NoError(t, err, "frame %d", fr.N)
		}
		again, err := keys.Seal(&Datagram{Version: dg.Version, Channel: dg.Channel, Seq: dg.Seq, FromHost: dg.FromHost, Payload: reencoded})
		require.NoError(t, err)
		require.Equal(t, fr.Payload, again, "frame %d does not re-encode byte for byte", fr.N)
	}
	require.Equal(t, 1, handshakes)
	require.Equal(t, captureFrames, data+control)
	require.Greater(t, bodies, 200)
	t.Logf("%d control, %d data datagrams, %d typed KD bodies re-encoded", control, data, bodies)
}

// TestGoldenCaptureNeedsHandshakeKey shows the data key really comes from the handshake: without the response
// (or with a key derived from a different body) no data datagram verifies.
func TestGoldenCaptureNeedsHandshakeKey(t *testing.T) {
	frames := captureDatagrams(t)
	k, err := ParseKey(captureKey)
	require.NoError(t, err)
	keys := NewKeys(k)
	resp, err := (&Response{}).MarshalBinary()
	require.NoError(t, err)
	bogus, err := DeriveDataKey(k, resp)
	require.NoError(t, err)
	keys.SetDataKey(bogus)
	for _, fr := range frames {
		if _, ch, _ := PeekHeader(fr.Payload); ch == ChannelData {
			_, err := keys.Open(fr.Payload)
			require.ErrorIs(t, err, ErrTag, "frame %d", fr.N)
		}
	}
	dec := NewDecoder(k)
	l := dec.Decode(frames[2]) // data channel before the decoder saw any handshake
	require.False(t, l.Verified)
	require.Contains(t, l.Error, ErrNoDataKey.Error())
}

// TestDecodeCaptureGolden runs the `kdstub kdnet decode` code path: 955 lines, all verified, numbered 1..955,
// each with the fields the command promises.
func TestDecodeCaptureGolden(t *testing.T) {
	f, err := os.Open(shareddata.Require(t, captureFile))
	require.NoError(t, err)
	defer f.Close()
	k, err := ParseKey(captureKey)
	require.NoError(t, err)
	var out bytes.Buffer
	s, err := DecodeCapture(context.Background(), f, k, &out)
	require.NoError(t, err)
	require.Equal(t, Summary{Frames: captureFrames, Datagrams: captureFrames, Verified: captureFrames}, s)
	lines := bytes.Split(bytes.TrimSuffix(out.Bytes(), []byte("\n")), []byte("\n"))
	require.Len(t, lines, captureFrames)
	kinds := map[string]int{}
	for i, raw := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw, &m), "line %d", i+1)
		for _, key := range []string{"n", "time", "src", "dst", "version", "channel", "seq", "from_host", "verified", "kd"} {
			require.Contains(t, m, key, "line %d", i+1)
		}
		require.NotContains(t, m, "error", "line %d", i+1)
		require.Equal(t, float64(i+1), m["n"])
		require.Equal(t, true, m["verified"])
		require.Equal(t, float64(4), m["version"])
		kd := m["kd"].(map[string]any)
		require.NotEmpty(t, kd, "line %d", i+1)
		if m["channel"] == "control" {
			kinds[kd["type"].(string)]++
			if kd["type"] == "response" {
				require.Len(t, kd["data_key"], 64)
			}
		} else {
			kinds["data"]++
		}
		src := m["src"].(string)
		require.Equal(t, src == "192.168.2.1:51111", m["from_host"], "line %d", i+1)
	}
	require.Equal(t, 1, kinds["response"])
	require.Equal(t, captureFrames, kinds["poke"]+kinds["response"]+kinds["data"])
	t.Logf("line kinds: %v", kinds)
}
