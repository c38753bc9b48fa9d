// Package rsp is a GDB remote serial protocol client shaped for QEMU 7.2's system-mode gdbstub.
//
// QEMU's dialect is small and particular (ack mode only, 2048-byte m replies, p gated on target.xml, a stop
// reply on connect, any byte stopping a running VM, global qqemu.* state), so the client is written against
// exactly that behaviour rather than against a generic gdbserver (see ../../../shared/docs/qemu.md §2).
package rsp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
)

// MaxPacket bounds a decoded payload. QEMU advertises PacketSize=0x1000; a generous cap keeps a hostile or
// corrupted stream from growing memory without limit.
const MaxPacket = 1 << 20

// Framing errors.
var (
	ErrChecksum  = errors.New("rsp: bad packet checksum")
	ErrTooLong   = errors.New("rsp: packet too long")
	ErrMalformed = errors.New("rsp: malformed packet")
)

// Encode frames payload as $payload#xx, escaping the four characters the protocol reserves.
func Encode(payload []byte) []byte {
	out := make([]byte, 0, len(payload)+4)
	out = append(out, '$')
	var sum byte
	for _, b := range payload {
		switch b {
		case '$', '#', '}', '*':
			out = append(out, '}', b^0x20)
			sum += '}' + (b ^ 0x20)
		default:
			out = append(out, b)
			sum += b
		}
	}
	return append(out, '#', hexDigits[sum>>4], hexDigits[sum&15])
}

const hexDigits = "0123456789abcdef"

// ReadPacket reads the next packet from r and returns its decoded payload.
//
// Acks ('+', '-') and any other bytes before '$' are skipped: QEMU acks every packet we send and the client
// never acks back (QEMU ignores acks in system mode). Escapes and run-length encoding are decoded although
// QEMU 7.2 sends neither, so the client keeps working against a stub that does.
func ReadPacket(r *bufio.Reader) ([]byte, error) {
	for skipped := 0; ; skipped++ {
		b, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		if b == '$' {
			break
		}
		if skipped > MaxPacket {
			return nil, fmt.Errorf("no packet start within %d bytes: %w", MaxPacket, ErrMalformed)
		}
	}
	var raw []byte
	var sum byte
	for {
		b, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		if b == '#' {
			break
		}
		if len(raw) >= MaxPacket {
			return nil, ErrTooLong
		}
		sum += b
		raw = append(raw, b)
	}
	var cs [2]byte
	for i := range cs {
		b, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		cs[i] = b
	}
	want, ok := parseHexByte(cs[0], cs[1])
	if !ok {
		return nil, fmt.Errorf("checksum digits %q: %w", cs[:], ErrMalformed)
	}
	if want != sum {
		return nil, fmt.Errorf("got %02x, computed %02x: %w", want, sum, ErrChecksum)
	}
	return DecodePayload(raw)
}

// DecodePayload undoes '}' escapes and '*' run-length encoding of a received packet body.
func DecodePayload(raw []byte) ([]byte, error) {
	if bytes.IndexByte(raw, '}') < 0 && bytes.IndexByte(raw, '*') < 0 {
		return raw, nil
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '}':
			if i+1 >= len(raw) {
				return nil, fmt.Errorf("escape at end of packet: %w", ErrMalformed)
			}
			i++
			out = append(out, raw[i]^0x20)
		case '*':
			if len(out) == 0 || i+1 >= len(raw) {
				return nil, fmt.Errorf("run-length marker without a preceding byte or count: %w", ErrMalformed)
			}
			i++
			n := int(raw[i]) - 29
			if n < 0 {
				return nil, fmt.Errorf("run-length count %d: %w", n, ErrMalformed)
			}
			if len(out)+n > MaxPacket {
				return nil, ErrTooLong
			}
			last := out[len(out)-1]
			for range n {
				out = append(out, last)
			}
		default:
			out = append(out, raw[i])
		}
	}
	return out, nil
}

func parseHexByte(hi, lo byte) (byte, bool) {
	h, ok1 := hexNibble(hi)
	l, ok2 := hexNibble(lo)
	return h<<4 | l, ok1 && ok2
}

func hexNibble(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// decodeHex decodes a hex string (either case) into bytes.
func decodeHex(s []byte) ([]byte, error) {
	if len(s)%2 != 0 {
		return nil, fmt.Errorf("odd hex length %d: %w", len(s), ErrMalformed)
	}
	out := make([]byte, len(s)/2)
	for i := range out {
		b, ok := parseHexByte(s[2*i], s[2*i+1])
		if !ok {
			return nil, fmt.Errorf("bad hex digit near offset %d: %w", 2*i, ErrMalformed)
		}
		out[i] = b
	}
	return out, nil
}

// encodeHex appends the lowercase hex of data to dst.
func encodeHex(dst, data []byte) []byte {
	for _, b := range data {
		dst = append(dst, hexDigits[b>>4], hexDigits[b&15])
	}
	return dst
}

// replyError interprets the "Exx" error convention. It returns nil for anything else.
func replyError(p []byte) error {
	if len(p) == 3 && p[0] == 'E' {
		if v, ok := parseHexByte(p[1], p[2]); ok {
			return &StubError{Code: v}
		}
	}
	return nil
}

// StubError is an "Exx" reply. QEMU uses E14 (EFAULT) for unmapped memory and E22 (EINVAL) for bad arguments.
type StubError struct{ Code byte }

func (e *StubError) Error() string { return fmt.Sprintf("gdbstub error E%02x", e.Code) }

// Well-known stub error codes (errno values, in hex as QEMU writes them).
const (
	CodeFault   = 0x14 // "E14": EFAULT, unmapped or unreadable memory
	CodeInvalid = 0x22 // "E22": EINVAL
)
