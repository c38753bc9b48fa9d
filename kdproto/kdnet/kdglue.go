package kdnet

import (
	"fmt"

	"github.com/kdstub/kdstub/kdproto"
)

// decodePacket parses the KD packet a data datagram carries (no 0xAA trailer on KDNET).
func decodePacket(b []byte) (*kdproto.Packet, error) {
	p, err := kdproto.DecodePacket(b)
	if err != nil {
		return nil, fmt.Errorf("KD packet in KDNET datagram: %w", err)
	}
	return p, nil
}

// describeKD is the JSON-ready description of the KD packet a data datagram carries.
func describeKD(b []byte) (map[string]any, error) {
	p, err := decodePacket(b)
	if err != nil {
		return nil, err
	}
	return p.Describe(), nil
}
