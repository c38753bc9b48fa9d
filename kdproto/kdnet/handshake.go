package kdnet

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
)

// Handshake body layout (kd-protocol.md §7.3).
const (
	PokeBodySize     = 344
	ResponseBodySize = 322
	NonceSize        = 32

	bodyMarker   = 0x01
	kindPoke     = 0x01
	kindResponse = 0x02

	offNonce      = 0x02
	offTargetAddr = 0x22
	offHostAddr   = 0x34
	offBoundAddr  = 0x46
	offHostRandom = 0x22
	addrFieldSize = 18 // IPv6 (v4-mapped for IPv4) + BE port
)

// ErrBody is wrapped by every handshake-body parsing error.
var ErrBody = errors.New("bad KDNET handshake body")

// Poke is the target's offer on the control channel, sent every ~3 s in every state.
type Poke struct {
	Nonce  [NonceSize]byte // the host echoes it; it binds a response to this poke
	Target netip.AddrPort  // the target's own address
	Host   netip.AddrPort  // the configured host address
	// Bound is the host the data channel is bound to; the zero-address/port-0 value means "not connected", and a
	// non-zero port tells a debugger this is a keep-alive it must not answer.
	Bound netip.AddrPort
}

// Response is the host's answer to a poke; its bytes (all 322) feed the data key.
type Response struct {
	Nonce      [NonceSize]byte // echo of the poke's nonce
	HostRandom [32]byte
}

// Connected reports whether the poke says the target's data channel is bound to a host (a keep-alive).
func (p *Poke) Connected() bool { return p.Bound.Port() != 0 }

// MarshalBinary encodes the 344-byte poke body.
func (p *Poke) MarshalBinary() ([]byte, error) {
	b := make([]byte, PokeBodySize)
	b[0], b[1] = bodyMarker, kindPoke
	copy(b[offNonce:], p.Nonce[:])
	putAddr(b[offTargetAddr:], p.Target)
	putAddr(b[offHostAddr:], p.Host)
	putAddr(b[offBoundAddr:], p.Bound)
	return b, nil
}

// UnmarshalBinary decodes a poke body. Trailing bytes beyond the known fields are ignored (they are zero in
// every capture), but the body must be at least as long as the fields it carries.
func (p *Poke) UnmarshalBinary(b []byte) error {
	if err := checkBody(b, kindPoke, offBoundAddr+addrFieldSize); err != nil {
		return fmt.Errorf("poke: %w", err)
	}
	copy(p.Nonce[:], b[offNonce:])
	p.Target = getAddr(b[offTargetAddr:])
	p.Host = getAddr(b[offHostAddr:])
	p.Bound = getAddr(b[offBoundAddr:])
	return nil
}

// MarshalBinary encodes the 322-byte response body.
func (r *Response) MarshalBinary() ([]byte, error) {
	b := make([]byte, ResponseBodySize)
	b[0], b[1] = bodyMarker, kindResponse
	copy(b[offNonce:], r.Nonce[:])
	copy(b[offHostRandom:], r.HostRandom[:])
	return b, nil
}

// UnmarshalBinary decodes a response body; it must carry all 322 bytes, since they all feed the data key.
func (r *Response) UnmarshalBinary(b []byte) error {
	if err := checkBody(b, kindResponse, ResponseBodySize); err != nil {
		return fmt.Errorf("response: %w", err)
	}
	copy(r.Nonce[:], b[offNonce:])
	copy(r.HostRandom[:], b[offHostRandom:])
	return nil
}

func checkBody(b []byte, kind byte, min int) error {
	if len(b) < min {
		return fmt.Errorf("%w: %d bytes, at least %d", ErrBody, len(b), min)
	}
	if b[0] != bodyMarker || b[1] != kind {
		return fmt.Errorf("%w: starts % x, want %02x %02x", ErrBody, b[:2], bodyMarker, kind)
	}
	return nil
}

// BodyKind classifies a control-channel payload: "poke", "response", "empty" (a host's connect request in
// target= mode) or "unknown".
func BodyKind(b []byte) string {
	switch {
	case len(b) == 0:
		return "empty"
	case len(b) >= 2 && b[0] == bodyMarker && b[1] == kindPoke:
		return "poke"
	case len(b) >= 2 && b[0] == bodyMarker && b[1] == kindResponse:
		return "response"
	}
	return "unknown"
}

// DeriveDataKey computes the data-channel key: SHA-256(control key ‖ the 322-byte response body) (§7.4).
func DeriveDataKey(k ControlKey, responseBody []byte) ([32]byte, error) {
	if len(responseBody) < ResponseBodySize {
		return [32]byte{}, fmt.Errorf("derive data key: %w: response body %d bytes, want %d", ErrBody, len(responseBody), ResponseBodySize)
	}
	h := sha256.New()
	h.Write(k[:])
	h.Write(responseBody[:ResponseBodySize])
	var dk [32]byte
	copy(dk[:], h.Sum(nil))
	return dk, nil
}

// putAddr writes an address as IPv6 (IPv4 v4-mapped) followed by a big-endian port; the zero AddrPort becomes
// ::ffff:0.0.0.0 port 0, as kdnet.dll writes "no bound host".
func putAddr(b []byte, ap netip.AddrPort) {
	a := ap.Addr()
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	a16 := a.As16()
	copy(b, a16[:])
	binary.BigEndian.PutUint16(b[16:], ap.Port())
}

// getAddr reads an address field, unmapping v4-mapped addresses so they print as a.b.c.d.
func getAddr(b []byte) netip.AddrPort {
	var a16 [16]byte
	copy(a16[:], b)
	return netip.AddrPortFrom(netip.AddrFrom16(a16).Unmap(), binary.BigEndian.Uint16(b[16:]))
}

// Describe returns JSON-ready fields of the poke.
func (p *Poke) Describe() map[string]any {
	return map[string]any{
		"type":      "poke",
		"nonce":     hex.EncodeToString(p.Nonce[:]),
		"target":    p.Target.String(),
		"host":      p.Host.String(),
		"bound":     p.Bound.String(),
		"connected": p.Connected(),
	}
}

// Describe returns JSON-ready fields of the response.
func (r *Response) Describe() map[string]any {
	return map[string]any{
		"type":        "response",
		"nonce":       hex.EncodeToString(r.Nonce[:]),
		"host_random": hex.EncodeToString(r.HostRandom[:]),
	}
}
