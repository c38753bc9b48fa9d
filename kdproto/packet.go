package kdproto

import "context"

// Packet leaders (KD_PACKET.PacketLeader).
const (
	DataLeader    uint32 = 0x30303030
	ControlLeader uint32 = 0x69696969
	BreakinLeader uint32 = 0x62626262 // on the wire only the single byte 0x62 is sent
)

// Packet is one KD packet as it travels: the 16-byte KD_PACKET header fields and the payload.
//
// Checksum is kept as received so that a decoded packet re-encodes to the same bytes; encoders that build new
// packets compute it. A break-in request is represented by Leader == BreakinLeader with no payload.
type Packet struct {
	Leader   uint32
	Type     uint16
	ID       uint32
	Checksum uint32
	Data     []byte
}

// Transport moves whole KD packets. Framing (serial leader hunting and trailer, or KDNET datagrams and their
// crypto) is the transport's business, so the session state machines work unchanged over either dialect.
type Transport interface {
	// ReadPacket blocks for the next packet; a break-in arrives as a Packet with Leader == BreakinLeader.
	ReadPacket(ctx context.Context) (*Packet, error)
	// WritePacket sends one packet; for data packets the transport adds whatever framing its dialect needs.
	WritePacket(ctx context.Context, p *Packet) error
	Close() error
}
