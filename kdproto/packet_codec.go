package kdproto

import (
	"encoding/binary"
	"fmt"
)

// KD_PACKET header offsets (kd-protocol.md §1.1).
const (
	offPacketLeader = 0x0
	offPacketType   = 0x4
	offByteCount    = 0x6
	offPacketID     = 0x8
	offChecksum     = 0xC
)

// Checksum is the KD payload checksum: the sum of all bytes as unsigned 8-bit values, wrapping at 32 bits.
func Checksum(data []byte) uint32 {
	var s uint32
	for _, c := range data {
		s += uint32(c)
	}
	return s
}

// NewDataPacket builds a data packet (leader 0x30303030) and computes its checksum. data is not copied.
func NewDataPacket(typ uint16, id uint32, data []byte) *Packet {
	return &Packet{Leader: DataLeader, Type: typ, ID: id, Checksum: Checksum(data), Data: data}
}

// NewControlPacket builds a control packet (ACK, RESEND, RESET): leader 0x69696969, no payload, checksum 0.
func NewControlPacket(typ uint16, id uint32) *Packet {
	return &Packet{Leader: ControlLeader, Type: typ, ID: id}
}

// NewBreakinPacket is the break-in request; on the wire it is the single byte 0x62.
func NewBreakinPacket() *Packet { return &Packet{Leader: BreakinLeader} }

// NewConnCheckPacket is the KDNET "connection check" pseudo-packet a target sends right after a handshake:
// leader 0, type UNUSED, and the host's IPv4 address as a little-endian u32 in the id field (kd-protocol.md §7.6).
func NewConnCheckPacket(hostIP uint32) *Packet {
	return &Packet{Leader: 0, Type: PacketTypeUnused, ID: hostIP}
}

// IsData reports a data packet (it carries a payload and must be acknowledged).
func (p *Packet) IsData() bool { return p.Leader == DataLeader }

// IsControl reports an ACK/RESEND/RESET control packet.
func (p *Packet) IsControl() bool { return p.Leader == ControlLeader }

// IsBreakin reports a break-in request.
func (p *Packet) IsBreakin() bool { return p.Leader == BreakinLeader }

// IsConnCheck reports the KDNET connection-check pseudo-packet.
func (p *Packet) IsConnCheck() bool { return p.Leader == 0 && p.Type == PacketTypeUnused }

// ChecksumOK reports whether Checksum matches the payload (always true for non-data packets).
func (p *Packet) ChecksumOK() bool { return !p.IsData() || p.Checksum == Checksum(p.Data) }

// String is a one-line summary for logs.
func (p *Packet) String() string {
	switch {
	case p.IsBreakin():
		return "BREAKIN"
	case p.IsConnCheck():
		return fmt.Sprintf("CONNCHECK id=%#x", p.ID)
	}
	return fmt.Sprintf("%s id=%#x len=%d", PacketTypeName(p.Type), p.ID, len(p.Data))
}

// DecodePacket parses one KD packet as carried in a KDNET datagram: the 16-byte header and ByteCount payload
// bytes with no 0xAA trailer, the 12-byte connection-check pseudo-packet, or the single break-in byte 0x62.
// The input must be exactly one packet. A data packet with a wrong checksum is rejected with a *ChecksumError
// (errors.Is ErrBadChecksum and ErrCorruptPacket), so a transport can pass it up for the session to RESEND.
func DecodePacket(b []byte) (*Packet, error) {
	switch {
	case len(b) == 0:
		return nil, &ShortError{What: "KD packet", Need: 1, Have: 0}
	case len(b) == 1:
		if b[0] == BreakinByte {
			return NewBreakinPacket(), nil
		}
		return nil, &MalformedError{What: "KD packet", Reason: fmt.Sprintf("single byte %#x is not a break-in", b[0])}
	case len(b) < ConnCheckSize:
		return nil, &ShortError{What: "KD packet header", Need: HeaderSize, Have: len(b)}
	}
	leader := binary.LittleEndian.Uint32(b[offPacketLeader:])
	typ := binary.LittleEndian.Uint16(b[offPacketType:])
	count := int(binary.LittleEndian.Uint16(b[offByteCount:]))
	id := binary.LittleEndian.Uint32(b[offPacketID:])
	if leader == 0 {
		if typ != PacketTypeUnused || count != 0 || len(b) != ConnCheckSize {
			return nil, &MalformedError{What: "connection-check packet",
				Reason: fmt.Sprintf("type %d, byte count %d, length %d (want type 0, count 0, length 12)", typ, count, len(b))}
		}
		return NewConnCheckPacket(id), nil
	}
	if len(b) < HeaderSize {
		return nil, &ShortError{What: "KD packet header", Need: HeaderSize, Have: len(b)}
	}
	sum := binary.LittleEndian.Uint32(b[offChecksum:])
	p := &Packet{Leader: leader, Type: typ, ID: id, Checksum: sum}
	switch leader {
	case ControlLeader:
		if count != 0 || len(b) != HeaderSize {
			return nil, &MalformedError{What: "control packet",
				Reason: fmt.Sprintf("byte count %d, length %d (control packets have no payload)", count, len(b))}
		}
		return p, nil
	case DataLeader:
	default:
		return nil, &MalformedError{What: "KD packet", Reason: fmt.Sprintf("bad leader %#x", leader)}
	}
	if count > MaxPayload {
		return nil, &MalformedError{What: "data packet", Reason: fmt.Sprintf("byte count %d exceeds %d", count, MaxPayload)}
	}
	if len(b) != HeaderSize+count {
		if len(b) < HeaderSize+count {
			return nil, &ShortError{What: "data packet payload", Need: HeaderSize + count, Have: len(b)}
		}
		return nil, &MalformedError{What: "data packet",
			Reason: fmt.Sprintf("length %d, header says %d payload bytes", len(b), count)}
	}
	p.Data = cloneBytes(b[HeaderSize:])
	if c := Checksum(p.Data); c != sum {
		return nil, fmt.Errorf("%w: %w", ErrCorruptPacket, &ChecksumError{ID: id, Want: sum, Computed: c})
	}
	return p, nil
}

// MarshalBinary is the exact inverse of DecodePacket: header and payload with no trailer, the 12-byte
// connection check, or the single byte 0x62 for a break-in. The Checksum field is written as stored.
func (p *Packet) MarshalBinary() ([]byte, error) {
	switch {
	case p.IsBreakin():
		return []byte{BreakinByte}, nil
	case p.IsConnCheck():
		b := make([]byte, ConnCheckSize)
		binary.LittleEndian.PutUint32(b[offPacketID:], p.ID)
		return b, nil
	case p.Leader == ControlLeader:
		if len(p.Data) != 0 {
			return nil, fmt.Errorf("encode control packet %s: %d payload bytes", PacketTypeName(p.Type), len(p.Data))
		}
	case p.Leader == DataLeader:
		if len(p.Data) > MaxPayload {
			return nil, fmt.Errorf("encode data packet %s: payload %d bytes exceeds %d", PacketTypeName(p.Type), len(p.Data), MaxPayload)
		}
	default:
		return nil, fmt.Errorf("encode packet: bad leader %#x", p.Leader)
	}
	return p.AppendHeader(make([]byte, 0, HeaderSize+len(p.Data))), nil
}

// AppendHeader appends the 16-byte KD_PACKET header and the payload (no trailer) to b without validation;
// transports use it after their own checks.
func (p *Packet) AppendHeader(b []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, p.Leader)
	b = binary.LittleEndian.AppendUint16(b, p.Type)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(p.Data)))
	b = binary.LittleEndian.AppendUint32(b, p.ID)
	b = binary.LittleEndian.AppendUint32(b, p.Checksum)
	return append(b, p.Data...)
}

// DecodeHeader parses the 16-byte KD_PACKET header alone and returns the packet (without payload) and the
// ByteCount it announces. Serial framers use it before reading the payload.
func DecodeHeader(b []byte) (*Packet, int, error) {
	if len(b) < HeaderSize {
		return nil, 0, &ShortError{What: "KD packet header", Need: HeaderSize, Have: len(b)}
	}
	p := &Packet{
		Leader:   binary.LittleEndian.Uint32(b[offPacketLeader:]),
		Type:     binary.LittleEndian.Uint16(b[offPacketType:]),
		ID:       binary.LittleEndian.Uint32(b[offPacketID:]),
		Checksum: binary.LittleEndian.Uint32(b[offChecksum:]),
	}
	return p, int(binary.LittleEndian.Uint16(b[offByteCount:])), nil
}
