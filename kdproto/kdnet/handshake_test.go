package kdnet

import (
	"crypto/sha256"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPokeRoundTrip(t *testing.T) {
	tests := []Poke{
		{Nonce: [32]byte{1, 2, 3}, Target: netip.MustParseAddrPort("10.0.0.2:50000"), Host: netip.MustParseAddrPort("10.0.0.1:50000")},
		{Nonce: [32]byte{31: 9}, Target: netip.MustParseAddrPort("[2001:db8::2]:51111"), Host: netip.MustParseAddrPort("[2001:db8::1]:51111"),
			Bound: netip.MustParseAddrPort("[2001:db8::1]:51111")},
	}
	for _, p := range tests {
		b, err := p.MarshalBinary()
		require.NoError(t, err)
		require.Len(t, b, PokeBodySize)
		require.Equal(t, "poke", BodyKind(b))
		var q Poke
		require.NoError(t, q.UnmarshalBinary(b))
		want := p
		if !want.Bound.IsValid() {
			want.Bound = netip.AddrPortFrom(netip.IPv4Unspecified(), 0) // "unbound" as kdnet.dll writes it
		}
		require.Equal(t, want, q)
		require.Equal(t, p.Bound.IsValid(), q.Connected())
	}
}

func TestPokeUnboundIsV4MappedZero(t *testing.T) {
	b, err := (&Poke{}).MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0}, b[offBoundAddr:offBoundAddr+addrFieldSize])
}

func TestResponseRoundTripAndDataKey(t *testing.T) {
	r := Response{Nonce: [32]byte{7: 7}, HostRandom: [32]byte{0: 1, 31: 2}}
	b, err := r.MarshalBinary()
	require.NoError(t, err)
	require.Len(t, b, ResponseBodySize)
	require.Equal(t, "response", BodyKind(b))
	var q Response
	require.NoError(t, q.UnmarshalBinary(b))
	require.Equal(t, r, q)

	k, err := ParseKey("1.2.3.4")
	require.NoError(t, err)
	dk, err := DeriveDataKey(k, b)
	require.NoError(t, err)
	require.Equal(t, sha256.Sum256(append(append([]byte(nil), k[:]...), b...)), dk)
	// Every byte of the body feeds the key, the zero tail included.
	b[ResponseBodySize-1] = 1
	dk2, err := DeriveDataKey(k, b)
	require.NoError(t, err)
	require.NotEqual(t, dk, dk2)
}

func TestHandshakeBodyRejects(t *testing.T) {
	poke, _ := (&Poke{}).MarshalBinary()
	resp, _ := (&Response{}).MarshalBinary()
	var p Poke
	var r Response
	require.ErrorIs(t, p.UnmarshalBinary(poke[:offBoundAddr+addrFieldSize-1]), ErrBody)
	require.ErrorIs(t, p.UnmarshalBinary(resp), ErrBody)
	require.ErrorIs(t, r.UnmarshalBinary(resp[:ResponseBodySize-1]), ErrBody)
	require.ErrorIs(t, r.UnmarshalBinary(poke), ErrBody)
	require.ErrorIs(t, p.UnmarshalBinary(nil), ErrBody)
	_, err := DeriveDataKey(ControlKey{}, resp[:10])
	require.ErrorIs(t, err, ErrBody)
	require.Equal(t, "empty", BodyKind(nil))
	require.Equal(t, "unknown", BodyKind([]byte{1, 3}))
}
