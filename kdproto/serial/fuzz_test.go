package serial

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/kdstub/kdstub/kdproto"
)

// FuzzReader feeds arbitrary byte streams to the framer: it must never panic, must end at EOF within a
// bounded number of calls, and every packet it returns must re-frame to bytes that decode to the same packet.
func FuzzReader(f *testing.F) {
	d, _ := AppendFrame(nil, kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 0x80800000, []byte("seed payload")))
	c, _ := AppendFrame(nil, kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0x80800000))
	f.Add(append(append([]byte{0x62, 0x01}, d...), c...))
	f.Add([]byte("0000iiii"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b))
		for range len(b) + 2 {
			p, err := r.ReadPacket()
			if err != nil {
				var fe *FrameError
				if errors.As(err, &fe) {
					continue
				}
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error type: %v", err)
				}
				return
			}
			fr, err := AppendFrame(nil, p)
			if err != nil {
				t.Fatalf("re-frame %s: %v", p, err)
			}
			q, err := NewReader(bytes.NewReader(fr)).ReadPacket()
			if err != nil {
				t.Fatalf("decode re-framed %s: %v", p, err)
			}
			if q.Leader != p.Leader || q.Type != p.Type || q.ID != p.ID || q.Checksum != p.Checksum || !bytes.Equal(q.Data, p.Data) {
				t.Fatalf("re-framed packet differs: %s vs %s", p, q)
			}
		}
		t.Fatalf("reader did not reach EOF on %d bytes", len(b))
	})
}
