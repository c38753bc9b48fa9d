package kdnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"
)

// KeySize is the size of the control key: four little-endian 64-bit words.
const KeySize = 32

// maxWordLen is the longest base-36 word bcdedit accepts; 13 digits is the first length that can exceed 2^64.
const maxWordLen = 13

// ControlKey is the 32-byte key derived from the `w.x.y.z` key string. It encrypts the control channel,
// and its bitwise complement is the HMAC key of both channels for the lifetime of the key configuration.
type ControlKey [KeySize]byte

// ErrBadKey is wrapped by every key-parsing error, so callers can tell a bad key from other failures.
var ErrBadKey = errors.New("bad KDNET key")

// KeyError says which word of a key string is wrong and why.
type KeyError struct {
	Word   int    // 1-based index of the offending word; 0 when the word count itself is wrong
	Text   string // the offending word (or the whole key when Word is 0)
	Reason string
}

func (e *KeyError) Error() string {
	if e.Word == 0 {
		return fmt.Sprintf("KDNET key %q: %s", e.Text, e.Reason)
	}
	return fmt.Sprintf("KDNET key word %d %q: %s", e.Word, e.Text, e.Reason)
}

// Unwrap lets errors.Is(err, ErrBadKey) match.
func (e *KeyError) Unwrap() error { return ErrBadKey }

// ParseKey turns a key string as printed by `bcdedit /dbgsettings` (four dot-separated base-36 words) into the
// control key. Upper-case input is accepted and lowered, because people retype keys; bcdedit itself only
// prints lower case.
func ParseKey(s string) (ControlKey, error) {
	var k ControlKey
	words := strings.Split(strings.ToLower(strings.TrimSpace(s)), ".")
	if len(words) != 4 {
		return k, &KeyError{Text: s, Reason: fmt.Sprintf("want 4 dot-separated words, got %d", len(words))}
	}
	for i, w := range words {
		v, err := parseWord(w)
		if err != nil {
			return k, &KeyError{Word: i + 1, Text: w, Reason: err.Error()}
		}
		binary.LittleEndian.PutUint64(k[i*8:], v)
	}
	return k, nil
}

// parseWord reads one base-36 word with the bcdedit alphabet and length rules.
func parseWord(w string) (uint64, error) {
	if w == "" {
		return 0, errors.New("empty word")
	}
	if len(w) > maxWordLen {
		return 0, fmt.Errorf("%d characters, at most %d allowed", len(w), maxWordLen)
	}
	var v uint64
	for i := 0; i < len(w); i++ {
		c := w[i]
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'z':
			d = uint64(c-'a') + 10
		default:
			return 0, fmt.Errorf("character %q at position %d is not in [0-9a-z]", c, i+1)
		}
		hi, lo := bits.Mul64(v, 36)
		lo, carry := bits.Add64(lo, d, 0)
		if hi != 0 || carry != 0 {
			return 0, errors.New("value does not fit in 64 bits (maximum is 3w5e11264sgsf)")
		}
		v = lo
	}
	return v, nil
}

// String prints the key in canonical `w.x.y.z` form (no leading zeros), which ParseKey reads back.
func (k ControlKey) String() string {
	var sb strings.Builder
	for i := 0; i < 4; i++ {
		if i > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(strconv.FormatUint(binary.LittleEndian.Uint64(k[i*8:]), 36))
	}
	return sb.String()
}

// HMACKey is the bitwise NOT of the control key; it authenticates both channels.
func (k ControlKey) HMACKey() [KeySize]byte {
	var h [KeySize]byte
	for i, b := range k {
		h[i] = ^b
	}
	return h
}

// Generate draws a fresh key from rand (crypto/rand.Reader in production, a seeded reader in tests).
// Each word is a full random 64-bit value, so the printed form looks like bcdedit's (words of up to 13 characters).
func Generate(rand io.Reader) (ControlKey, error) {
	var k ControlKey
	if _, err := io.ReadFull(rand, k[:]); err != nil {
		return k, fmt.Errorf("read %d random bytes for a KDNET key: %w", KeySize, err)
	}
	return k, nil
}
