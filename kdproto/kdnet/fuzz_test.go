package kdnet

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/shareddata"
)

// captureSeeds returns up to max datagrams of the shared capture, or nothing when it is absent: fuzz seeds from
// the shared data are added at run time only, never committed.
func captureSeeds(max int) [][]byte {
	p, err := shareddata.Path(captureFile)
	if err != nil {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	cr, err := NewCaptureReader(f)
	if err != nil {
		return nil
	}
	var out [][]byte
	seenLen := map[int]int{}
	for len(out) < max {
		fr, err := cr.Next()
		if err != nil {
			break
		}
		// Keep variety: at most three datagrams of each size.
		if seenLen[len(fr.Payload)] < 3 {
			seenLen[len(fr.Payload)]++
			out = append(out, append([]byte(nil), fr.Payload...))
		}
	}
	return out
}

// captureKeys is the 8.8.8.8 key state, with the capture's data key when the capture is present.
func captureKeys(tb testing.TB) *Keys {
	k, err := ParseKey(captureKey)
	require.NoError(tb, err)
	keys := NewKeys(k)
	for _, b := range captureSeeds(1 << 20) {
		if d, err := keys.Open(b); err == nil && d.Channel == ChannelControl && BodyKind(d.Payload) == "response" {
			dk, err := DeriveDataKey(k, d.Payload)
			require.NoError(tb, err)
			keys.SetDataKey(dk)
			return keys
		}
	}
	keys.SetDataKey([32]byte{0: 0x5a})
	return keys
}

func FuzzOpen(f *testing.F) {
	keys := captureKeys(f)
	for _, b := range captureSeeds(64) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := keys.Open(b)
		if err != nil {
			return
		}
		if d.Seq > maxSeq || d.Pad > padMask || len(d.Payload) > len(b) {
			t.Fatalf("implausible datagram %+v from %d bytes", d, len(b))
		}
		again, err := keys.Seal(d)
		if err != nil {
			t.Fatalf("re-seal of an opened datagram failed: %v", err)
		}
		if len(again) != len(b) {
			t.Fatalf("re-seal length %d, original %d", len(again), len(b))
		}
	})
}

func controlBodies(kind string) [][]byte {
	k, _ := ParseKey(captureKey)
	keys := NewKeys(k)
	var out [][]byte
	for _, b := range captureSeeds(1 << 20) {
		if d, err := keys.Open(b); err == nil && d.Channel == ChannelControl && BodyKind(d.Payload) == kind {
			out = append(out, d.Payload)
			if len(out) == 4 {
				break
			}
		}
	}
	return out
}

func FuzzPokeBody(f *testing.F) {
	for _, b := range controlBodies("poke") {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Poke
		if err := p.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrBody) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		enc, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var q Poke
		if err := q.UnmarshalBinary(enc); err != nil {
			t.Fatal(err)
		}
		// Mapped IPv6 forms collapse to IPv4 on decode, so compare the re-decoded value with itself re-encoded.
		enc2, _ := q.MarshalBinary()
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("poke encoding not stable")
		}
		_ = p.Describe()
	})
}

func FuzzResponseBody(f *testing.F) {
	for _, b := range controlBodies("response") {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Response
		if err := r.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrBody) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if _, err := DeriveDataKey(ControlKey{}, b); err != nil {
			t.Fatalf("a response that parses must yield a data key: %v", err)
		}
		enc, _ := r.MarshalBinary()
		var q Response
		if err := q.UnmarshalBinary(enc); err != nil || q != r {
			t.Fatalf("response round trip: %v", err)
		}
	})
}

func FuzzParseKey(f *testing.F) {
	f.Add("8.8.8.8")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		back, err := ParseKey(k.String())
		if err != nil || back != k {
			t.Fatalf("key %q prints as %q which parses to %v (%v)", s, k.String(), back, err)
		}
	})
}

// FuzzDecodeLine drives the line builder of `kdstub kdnet decode` twice per input: with raw datagram bytes
// (almost always rejected), and with arbitrary plaintext sealed under the decoder's keys, which reaches the
// handshake and KD packet decoders behind the HMAC.
func FuzzDecodeLine(f *testing.F) {
	for _, b := range captureSeeds(32) {
		f.Add(b, []byte{}, uint8(0), false)
	}
	k, err := ParseKey("1.2.3.4")
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, raw, plain []byte, ch uint8, fromHost bool) {
		dec := NewDecoder(k)
		resp, _ := (&Response{HostRandom: [32]byte{1}}).MarshalBinary()
		keys := NewKeys(k)
		hs, _ := keys.Seal(&Datagram{Version: Version5, Channel: ChannelControl, Seq: 1, FromHost: true, Payload: resp})
		from, to := netip.MustParseAddrPort("10.0.0.1:50000"), netip.MustParseAddrPort("10.0.0.2:50000")
		if l := dec.Decode(&Frame{N: 1, UDP: true, Src: from, Dst: to, Payload: hs}); !l.Verified {
			t.Fatalf("handshake does not verify: %s", l.Error)
		}
		dk, _ := DeriveDataKey(k, resp)
		keys.SetDataKey(dk)

		l := dec.Decode(&Frame{N: 2, Time: time.Unix(0, 0), UDP: true, Src: from, Dst: to, Payload: raw})
		if _, err := json.Marshal(&l); err != nil {
			t.Fatalf("line not JSON-encodable: %v", err)
		}
		if len(plain) > MaxPayload {
			return
		}
		b, err := keys.Seal(&Datagram{Version: Version4, Channel: Channel(ch % 2), Seq: 9, FromHost: fromHost, Payload: plain})
		if err != nil {
			t.Fatal(err)
		}
		l = dec.Decode(&Frame{N: 3, UDP: true, Src: from, Dst: to, Payload: b})
		if !l.Verified || l.Seq != 9 || l.FromHost != fromHost {
			t.Fatalf("sealed datagram decoded as %+v", l)
		}
		if _, err := json.Marshal(&l); err != nil {
			t.Fatalf("line not JSON-encodable: %v", err)
		}
	})
}

// FuzzCaptureReader feeds arbitrary files to the capture reader and decoder: errors are fine, panics and
// unbounded allocations are not.
func FuzzCaptureReader(f *testing.F) {
	if p, err := shareddata.Path(captureFile); err == nil {
		if fh, err := os.Open(p); err == nil {
			if zr, err := gzip.NewReader(fh); err == nil {
				head := make([]byte, 8192) // the pcapng header blocks and the first frames, decompressed
				n, _ := io.ReadFull(zr, head)
				f.Add(head[:n])
			}
			fh.Close()
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cr, err := NewCaptureReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		dec := NewDecoder(ControlKey{})
		for i := 0; i < 10000; i++ {
			fr, err := cr.Next()
			if errors.Is(err, io.EOF) || err != nil {
				return
			}
			if fr.UDP {
				_ = dec.Decode(fr)
			}
		}
	})
}
