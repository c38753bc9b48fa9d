package kdnet

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseKeyVectors(t *testing.T) {
	// Vectors from kd-protocol.md §7.2 (computed from the rule, not captured data).
	tests := []struct {
		key, hex, canonical string
	}{
		{"8.8.8.8", strings.Repeat("0800000000000000", 4), "8.8.8.8"},
		{"z.10.zz.100", "2300000000000000" + "2400000000000000" + "0f05000000000000" + "1005000000000000", "z.10.zz.100"},
		{"kdstub.windbg.qemu.3w5e11264sgsf", "1383764900000000" + "2c75327500000000" + "96cc120000000000" + "ffffffffffffffff", "kdstub.windbg.qemu.3w5e11264sgsf"},
		{"KDSTUB.WinDbg.QEMU.3W5E11264SGSF", "1383764900000000" + "2c75327500000000" + "96cc120000000000" + "ffffffffffffffff", "kdstub.windbg.qemu.3w5e11264sgsf"},
		{"0.00.000.0000000000001", strings.Repeat("0000000000000000", 3) + "0100000000000000", "0.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			k, err := ParseKey(tt.key)
			require.NoError(t, err)
			require.Equal(t, tt.hex, hex.EncodeToString(k[:]))
			require.Equal(t, tt.canonical, k.String())
		})
	}
}

func TestParseKeyHMACKey(t *testing.T) {
	k, err := ParseKey("8.8.8.8")
	require.NoError(t, err)
	h := k.HMACKey()
	require.Equal(t, strings.Repeat("f7ffffffffffffff", 4), hex.EncodeToString(h[:]))
}

func TestParseKeyRejects(t *testing.T) {
	tests := []struct {
		key  string
		word int
		why  string
	}{
		{"1.2.3", 0, "want 4"},
		{"1.2.3.4.5", 0, "want 4"},
		{"", 0, "want 4"},
		{"1..3.4", 2, "empty"},
		{"1.2.3.3w5e11264sgsg", 4, "64 bits"},
		{"1.2.zzzzzzzzzzzzz.4", 3, "64 bits"},
		{"1.2.3.00000000000001", 4, "at most 13"},
		{"1.2-.3.4", 2, "not in [0-9a-z]"},
		{"1.2.3.é", 4, "not in [0-9a-z]"},
		{"a b.1.2.3", 1, "not in [0-9a-z]"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			_, err := ParseKey(tt.key)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrBadKey))
			var ke *KeyError
			require.True(t, errors.As(err, &ke))
			require.Equal(t, tt.word, ke.Word)
			require.Contains(t, err.Error(), tt.why)
		})
	}
}

func TestGenerateRoundTrips(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var buf bytes.Buffer
	for i := 0; i < 64; i++ {
		buf.WriteByte(byte(r.Uint32()))
	}
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		k, err := Generate(&buf)
		require.NoError(t, err)
		s := k.String()
		require.Len(t, strings.Split(s, "."), 4)
		back, err := ParseKey(s)
		require.NoError(t, err)
		require.Equal(t, k, back)
		seen[s] = true
	}
	require.Len(t, seen, 2, "two draws gave the same key")
	_, err := Generate(&buf) // exhausted
	require.Error(t, err)
}
