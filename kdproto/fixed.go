package kdproto

import (
	"encoding/binary"
	"fmt"
)

// Fixed-size structures are Go structs whose field order and sizes equal the wire layout (as debug/pe does),
// encoded little-endian with encoding/binary. Reserved and padding bytes are named fields, not blanks, so
// whatever a peer put there (WinDbg sends uninitialised junk) survives a decode/encode round trip.

// decodeFixed fills v (a pointer to a fixed-size struct) from the start of b.
func decodeFixed(b []byte, v any, what string) error {
	n := binary.Size(v)
	if n < 0 {
		return fmt.Errorf("decode %s: %T has no fixed size", what, v)
	}
	if len(b) < n {
		return &ShortError{What: what, Need: n, Have: len(b)}
	}
	if _, err := binary.Decode(b[:n], binary.LittleEndian, v); err != nil {
		return fmt.Errorf("decode %s: %w", what, err)
	}
	return nil
}

// appendFixed appends the little-endian encoding of v (a fixed-size struct or pointer to one) to b.
func appendFixed(b []byte, v any, what string) ([]byte, error) {
	out, err := binary.Append(b, binary.LittleEndian, v)
	if err != nil {
		return b, fmt.Errorf("encode %s: %w", what, err)
	}
	return out, nil
}

// cloneBytes copies b so decoded structures never alias the caller's buffer; nil stays nil for empty input.
func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
