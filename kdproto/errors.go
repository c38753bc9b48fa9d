package kdproto

import (
	"errors"
	"fmt"
)

// Sentinel errors. Decoders wrap them in typed errors carrying the detail, so callers can both match the
// class with errors.Is and print what exactly was wrong.
var (
	// ErrShort means the bytes end before the structure does.
	ErrShort = errors.New("kdproto: input too short")
	// ErrMalformed means the bytes are long enough but inconsistent (bad leader, length mismatch, size limit).
	ErrMalformed = errors.New("kdproto: malformed packet")
	// ErrBadChecksum means a data packet's payload does not sum to its Checksum field.
	ErrBadChecksum = errors.New("kdproto: bad checksum")
	// ErrCorruptPacket marks a transport read error that lost one packet but left the stream usable. The
	// session answers it with RESEND (kd-protocol.md §1.2) and keeps reading; any other read error ends the
	// session. Transports wrap their framing errors (bad checksum, bad trailer, oversize) with it.
	ErrCorruptPacket = errors.New("kdproto: corrupt packet")
	// ErrUnsupported means the value is well formed but this package does not model it (e.g. 32-bit state changes).
	ErrUnsupported = errors.New("kdproto: unsupported")
)

// ShortError reports a structure cut short.
type ShortError struct {
	What string // the structure being decoded
	Need int    // bytes it needs
	Have int    // bytes available
}

func (e *ShortError) Error() string {
	return fmt.Sprintf("decode %s: need %d bytes, have %d", e.What, e.Need, e.Have)
}

// Is makes errors.Is(err, ErrShort) hold.
func (e *ShortError) Is(target error) bool { return target == ErrShort }

// MalformedError reports inconsistent bytes.
type MalformedError struct {
	What   string
	Reason string
}

func (e *MalformedError) Error() string { return fmt.Sprintf("decode %s: %s", e.What, e.Reason) }

// Is makes errors.Is(err, ErrMalformed) hold.
func (e *MalformedError) Is(target error) bool { return target == ErrMalformed }

// ChecksumError reports a data packet whose payload does not match its checksum.
type ChecksumError struct {
	ID       uint32
	Want     uint32 // the header's Checksum
	Computed uint32
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("packet id %#x: checksum %#x in header, payload sums to %#x", e.ID, e.Want, e.Computed)
}

// Is makes errors.Is(err, ErrBadChecksum) hold.
func (e *ChecksumError) Is(target error) bool { return target == ErrBadChecksum }

// UnknownAPIError reports an ApiNumber this package has no structure for.
type UnknownAPIError struct {
	Family string // "manipulate", "state change", "file io", ...
	API    uint32
}

func (e *UnknownAPIError) Error() string {
	return fmt.Sprintf("unknown %s api %#x", e.Family, e.API)
}

// UnsupportedTypeError reports a packet type whose body this package does not decode.
type UnsupportedTypeError struct{ Type uint16 }

func (e *UnsupportedTypeError) Error() string {
	return fmt.Sprintf("no body decoder for %s", PacketTypeName(e.Type))
}

// Is makes errors.Is(err, ErrUnsupported) hold.
func (e *UnsupportedTypeError) Is(target error) bool { return target == ErrUnsupported }
