package serial

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
)

func frame(t *testing.T, p *kdproto.Packet) []byte {
	t.Helper()
	b, err := AppendFrame(nil, p)
	require.NoError(t, err)
	return b
}

// readAll decodes every packet of a stream, collecting recoverable errors, until EOF.
func readAll(t *testing.T, r io.Reader) ([]*kdproto.Packet, []error) {
	t.Helper()
	fr := NewReader(r)
	var ps []*kdproto.Packet
	var errs []error
	for range 1000 {
		p, err := fr.ReadPacket()
		if err != nil {
			var fe *FrameError
			if errors.As(err, &fe) {
				require.ErrorIs(t, err, kdproto.ErrCorruptPacket)
				errs = append(errs, err)
				continue
			}
			require.ErrorIs(t, err, io.EOF)
			return ps, errs
		}
		ps = append(ps, p)
	}
	t.Fatal("stream did not end")
	return nil, nil
}

func TestFramerRoundTripSplitReads(t *testing.T) {
	data := bytes.Repeat([]byte{0x30, 0x69, 0x62, 0xAA, 0x01}, 100) // payload full of leader-like bytes
	want := []*kdproto.Packet{
		kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 0x80800000, data),
		kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0x80800000),
		kdproto.NewBreakinPacket(),
		kdproto.NewDataPacket(kdproto.PacketTypeStateChange64, 0x80800800, nil),
		kdproto.NewControlPacket(kdproto.PacketTypeReset, 0),
		kdproto.NewDataPacket(kdproto.PacketTypeDebugIO, 1, make([]byte, kdproto.MaxPayload)),
	}
	var stream []byte
	for _, p := range want {
		stream = append(stream, frame(t, p)...)
	}
	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(stream),
		"one byte": iotest.OneByteReader(bytes.NewReader(stream)),
		"half":     iotest.HalfReader(bytes.NewReader(stream)),
	} {
		t.Run(name, func(t *testing.T) {
			got, errs := readAll(t, r)
			require.Empty(t, errs)
			require.Len(t, got, len(want))
			for i := range want {
				if len(want[i].Data) == 0 {
					want[i].Data = nil
				}
				if len(got[i].Data) == 0 {
					got[i].Data = nil
				}
				require.Equal(t, want[i], got[i], "packet %d", i)
			}
		})
	}
}

func TestFramerGarbageAndCorruption(t *testing.T) {
	good := kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 7, []byte("hello world"))
	ack := kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 7)

	badSum := frame(t, good)
	badSum[kdproto.HeaderSize] ^= 0xFF
	noTrailer := frame(t, good)
	noTrailer = noTrailer[:len(noTrailer)-1]
	oversize := kdproto.NewDataPacket(2, 1, nil).AppendHeader(nil)
	oversize[6], oversize[7] = 0xA1, 0x0F // ByteCount 4001
	ctlPayload := kdproto.NewControlPacket(4, 1).AppendHeader(nil)
	ctlPayload[6] = 1

	tests := []struct {
		name     string
		stream   []byte
		wantPkts int
		wantErrs int
		errIs    error
	}{
		{"leading garbage", append([]byte{1, 2, 0x30, 0x30, 0x30, 0x69, 0x69, 7}, frame(t, good)...), 1, 0, nil},
		{"bad checksum then good", append(badSum, frame(t, good)...), 1, 1, kdproto.ErrBadChecksum},
		{"missing trailer then ack", append(noTrailer, frame(t, ack)...), 1, 1, nil},
		{"oversize then good", append(oversize, frame(t, good)...), 1, 1, nil},
		{"control with byte count", append(ctlPayload, frame(t, ack)...), 1, 1, nil},
		{"garbage bound", append(bytes.Repeat([]byte{0x11}, MaxGarbage+5), frame(t, ack)...), 1, 1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := readAll(t, iotest.HalfReader(bytes.NewReader(tc.stream)))
			require.Len(t, got, tc.wantPkts)
			require.Len(t, errs, tc.wantErrs)
			if tc.errIs != nil {
				require.ErrorIs(t, errs[0], tc.errIs)
			}
		})
	}
	// A packet cut off by the end of the stream is an unexpected EOF, not a recoverable error.
	_, err := NewReader(bytes.NewReader(frame(t, good)[:10])).ReadPacket()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)

	_, err = AppendFrame(nil, kdproto.NewConnCheckPacket(1))
	require.Error(t, err)
}

func TestTransportOverPipe(t *testing.T) {
	a, b := net.Pipe()
	ta, tb := New(a), New(b)
	t.Cleanup(func() { _ = ta.Close(); _ = tb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	want := kdproto.NewDataPacket(kdproto.PacketTypeDebugIO, 3, []byte("text"))
	go func() { _ = ta.WritePacket(ctx, want) }()
	got, err := tb.ReadPacket(ctx)
	require.NoError(t, err)
	require.Equal(t, want, got)

	// ReadPacket honours its context while nothing arrives.
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	_, err = tb.ReadPacket(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Closing the peer ends the stream with a non-recoverable error.
	require.NoError(t, ta.Close())
	_, err = tb.ReadPacket(ctx)
	require.Error(t, err)
	require.NotErrorIs(t, err, kdproto.ErrCorruptPacket)
}

// TestListenUnixReplacesStaleSocket: a socket file nobody listens on is replaced; a live one is not.
func TestListenUnixReplacesStaleSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	path := t.TempDir() + "/kd.sock"
	// Leave a stale socket file: listen, then close the fd without unlinking.
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	ul.SetUnlinkOnClose(false)
	require.NoError(t, ul.Close())

	ln, err := Listen(ctx, "unix", path)
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	_, err = Listen(ctx, "unix", path)
	require.Error(t, err, "a live socket must not be taken over")
	_, err = Listen(ctx, "udp", "127.0.0.1:0")
	require.Error(t, err)
}
