// Package serial is the KD serial ("KDCOM") transport: KD packets framed as on a COM port, carried over any
// byte stream (a TCP connection for WinDbg's -k com:ipport=, or a unix stream socket as QEMU's chardev
// convention and some Linux clients use).
//
// Framing (kd-protocol.md §1.1): a data packet is 30 30 30 30, 12 more header bytes, the payload and the
// trailer AA; a control packet is 69 69 69 69 and 12 header bytes; a break-in is the lone byte 62. The
// reader hunts for leaders byte by byte, so garbage and split reads resynchronise on the next leader.
package serial

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/kdstub/kdstub/kdproto"
)

// MaxGarbage bounds how many bytes the leader hunt skips before it reports the stream as corrupt. The report
// is recoverable (the session answers RESEND) and hunting continues; the bound only keeps a stream of noise
// from looking like silence.
const MaxGarbage = 64 << 10

// FrameError is a recoverable framing error: one packet (or some garbage) was lost and the stream continues.
// It matches kdproto.ErrCorruptPacket with errors.Is.
type FrameError struct {
	Reason string
	Err    error // underlying codec error, if any
}

func (e *FrameError) Error() string {
	if e.Err != nil {
		return "kd serial frame: " + e.Reason + ": " + e.Err.Error()
	}
	return "kd serial frame: " + e.Reason
}

// Unwrap exposes the codec error (e.g. *kdproto.ChecksumError).
func (e *FrameError) Unwrap() []error {
	if e.Err != nil {
		return []error{kdproto.ErrCorruptPacket, e.Err}
	}
	return []error{kdproto.ErrCorruptPacket}
}

// Reader decodes serial KD frames from a byte stream. It is not safe for concurrent use; the Transport gives it
// to one goroutine.
type Reader struct {
	br *bufio.Reader
}

// NewReader wraps r.
func NewReader(r io.Reader) *Reader { return &Reader{br: bufio.NewReaderSize(r, 2*kdproto.MaxPayload)} }

// ReadPacket returns the next packet. Recoverable problems come back as *FrameError (and the next call carries
// on); I/O errors (io.EOF, a closed connection) are returned as they are and end the stream.
func (r *Reader) ReadPacket() (*kdproto.Packet, error) {
	leader, err := r.hunt()
	if err != nil {
		return nil, err
	}
	if leader == kdproto.BreakinLeader {
		return kdproto.NewBreakinPacket(), nil
	}
	var hdr [kdproto.HeaderSize]byte
	for i := range 4 {
		hdr[i] = byte(leader)
	}
	if _, err := io.ReadFull(r.br, hdr[4:]); err != nil {
		return nil, eofErr(err)
	}
	p, count, err := kdproto.DecodeHeader(hdr[:])
	if err != nil {
		return nil, &FrameError{Reason: "header", Err: err}
	}
	if leader == kdproto.ControlLeader {
		if count != 0 {
			return nil, &FrameError{Reason: fmt.Sprintf("control packet %s announces %d payload bytes", kdproto.PacketTypeName(p.Type), count)}
		}
		return p, nil
	}
	if count > kdproto.MaxPayload {
		return nil, &FrameError{Reason: fmt.Sprintf("byte count %d exceeds %d", count, kdproto.MaxPayload)}
	}
	p.Data = make([]byte, count)
	if _, err := io.ReadFull(r.br, p.Data); err != nil {
		return nil, eofErr(err)
	}
	tr, err := r.br.ReadByte()
	if err != nil {
		return nil, eofErr(err)
	}
	if tr != kdproto.TrailerByte {
		// The byte may start the next packet: put it back for the hunt.
		_ = r.br.UnreadByte()
		return nil, &FrameError{Reason: fmt.Sprintf("packet id %#x: trailer %#x, want 0xaa", p.ID, tr)}
	}
	if c := kdproto.Checksum(p.Data); c != p.Checksum {
		return nil, &FrameError{Reason: "checksum", Err: &kdproto.ChecksumError{ID: p.ID, Want: p.Checksum, Computed: c}}
	}
	return p, nil
}

// hunt reads until four identical leader bytes (0x30 or 0x69) or a break-in byte. A different leader byte
// restarts the count; any other byte resets it (ReactOS KdpReceivePacketLeader).
func (r *Reader) hunt() (uint32, error) {
	var last byte
	count, skipped := 0, 0
	for {
		c, err := r.br.ReadByte()
		if err != nil {
			return 0, err
		}
		switch c {
		case 0x30, 0x69:
			if c == last {
				count++
			} else {
				last, count = c, 1
			}
			if count == 4 {
				return uint32(c) * 0x01010101, nil
			}
			continue
		case kdproto.BreakinByte:
			if count == 0 {
				return kdproto.BreakinLeader, nil
			}
		}
		count, last = 0, 0
		skipped++
		if skipped >= MaxGarbage {
			return 0, &FrameError{Reason: fmt.Sprintf("no leader in %d bytes", skipped)}
		}
	}
}

// eofErr turns an EOF inside a frame into io.ErrUnexpectedEOF, which callers treat as the end of the stream.
func eofErr(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// AppendFrame appends the serial encoding of p to b: header, payload and trailer for data packets, the
// 16-byte header for control packets, 0x62 for a break-in. The connection-check pseudo-packet exists only on
// KDNET and is refused.
func AppendFrame(b []byte, p *kdproto.Packet) ([]byte, error) {
	switch {
	case p.IsBreakin():
		return append(b, kdproto.BreakinByte), nil
	case p.IsControl():
		if len(p.Data) != 0 {
			return b, fmt.Errorf("serial frame: control packet %s with %d payload bytes", kdproto.PacketTypeName(p.Type), len(p.Data))
		}
		return p.AppendHeader(b), nil
	case p.IsData():
		if len(p.Data) > kdproto.MaxPayload {
			return b, fmt.Errorf("serial frame: %s payload %d bytes exceeds %d", kdproto.PacketTypeName(p.Type), len(p.Data), kdproto.MaxPayload)
		}
		return append(p.AppendHeader(b), kdproto.TrailerByte), nil
	}
	return b, fmt.Errorf("serial frame: cannot carry %s (leader %#x)", p, p.Leader)
}
