package kdnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func testKeys(t testing.TB, s string) *Keys {
	t.Helper()
	k, err := ParseKey(s)
	require.NoError(t, err)
	return NewKeys(k)
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := testKeys(t, "z.10.zz.100")
	k.SetDataKey([32]byte{1, 2, 3})
	for _, ch := range []Channel{ChannelControl, ChannelData} {
		for _, v := range []uint8{Version2, Version4, Version5} {
			for n := 0; n <= 40; n++ {
				payload := bytes.Repeat([]byte{byte(n + 1)}, n)
				in := &Datagram{Version: v, Channel: ch, Seq: uint64(1000 + n), FromHost: n%2 == 0, Payload: payload}
				b, err := k.Seal(in)
				require.NoError(t, err)
				require.Equal(t, 0, (len(b)-headerSize-TagSize)%16)
				require.Equal(t, headerSize+metadataSize+n+PadLen(n)+TagSize, len(b))
				out, err := k.OpenFrom(b, in.FromHost)
				require.NoError(t, err)
				require.Equal(t, v, out.Version)
				require.Equal(t, ch, out.Channel)
				require.Equal(t, in.Seq, out.Seq)
				require.Equal(t, in.FromHost, out.FromHost)
				require.Equal(t, uint8(PadLen(n)), out.Pad)
				require.Equal(t, payload, out.Payload)
				require.Equal(t, b[len(b)-TagSize:], out.Tag[:])
				// Re-sealing the decoded datagram reproduces it: the tag/IV depends only on the plaintext.
				again, err := k.Seal(out)
				require.NoError(t, err)
				require.Equal(t, b, again)
			}
		}
	}
}

func TestOpenRejects(t *testing.T) {
	k := testKeys(t, "1.2.3.4")
	good, err := k.Seal(&Datagram{Version: Version5, Channel: ChannelControl, Seq: 7, Payload: []byte("hello")})
	require.NoError(t, err)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"short", good[:MinDatagramSize-1], ErrShort},
		{"magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMagic},
		{"version", mut(func(b []byte) []byte { b[4] = 3; return b }), ErrVersion},
		{"channel", mut(func(b []byte) []byte { b[5] = 2; return b }), ErrChannel},
		{"length", mut(func(b []byte) []byte { return append(b, 0) }), ErrLength},
		{"tag", mut(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrTag},
		{"ciphertext", mut(func(b []byte) []byte { b[headerSize+3] ^= 0x80; return b }), ErrTag},
		{"header under HMAC", mut(func(b []byte) []byte { b[4] = Version4; return b }), ErrTag},
		{"too long", append([]byte(Magic), make([]byte, headerSize+metadataSize+MaxPayload+2*blockSize+TagSize)...), ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := k.Open(tt.b)
			require.Error(t, err)
			require.True(t, errors.Is(err, tt.want), "got %v", err)
		})
	}
	t.Run("wrong key", func(t *testing.T) {
		_, err := testKeys(t, "1.2.3.5").Open(good)
		require.ErrorIs(t, err, ErrTag)
	})
	t.Run("direction", func(t *testing.T) {
		_, err := k.OpenFrom(good, true)
		require.ErrorIs(t, err, ErrDirection)
		_, err = k.OpenFrom(good, false)
		require.NoError(t, err)
	})
	t.Run("no data key", func(t *testing.T) {
		_, err := k.Seal(&Datagram{Version: Version5, Channel: ChannelData})
		require.ErrorIs(t, err, ErrNoDataKey)
		b := mut(func(b []byte) []byte { b[5] = byte(ChannelData); return b })
		_, err = k.Open(b)
		require.ErrorIs(t, err, ErrNoDataKey)
	})
}

// sealRaw builds a datagram from an arbitrary plaintext (metadata included) with a valid tag, to test what Open
// does with authenticated but malformed metadata.
func sealRaw(k *Keys, version uint8, ch Channel, plain []byte) []byte {
	out := make([]byte, headerSize+len(plain)+TagSize)
	copy(out, Magic)
	out[4], out[5] = version, byte(ch)
	copy(out[headerSize:], plain)
	tag := k.mac(out[:headerSize+len(plain)])
	copy(out[headerSize+len(plain):], tag)
	blk, _ := k.block(ch)
	body := out[headerSize : headerSize+len(plain)]
	cbcEncrypt(blk, tag, body)
	return out
}

func TestOpenRejectsBadMetadata(t *testing.T) {
	k := testKeys(t, "1.2.3.4")
	plain := make([]byte, 16)
	binary.BigEndian.PutUint64(plain, 5<<8|0x10) // reserved bit
	_, err := k.Open(sealRaw(k, Version5, ChannelControl, plain))
	require.ErrorIs(t, err, ErrMetadata)
	binary.BigEndian.PutUint64(plain, 5<<8|0x0f) // pad 15 but only 8 bytes after the metadata
	_, err = k.Open(sealRaw(k, Version5, ChannelControl, plain))
	require.ErrorIs(t, err, ErrMetadata)
	binary.BigEndian.PutUint64(plain, 5<<8|0x88) // host, pad 8: valid, empty payload
	d, err := k.Open(sealRaw(k, Version5, ChannelControl, plain))
	require.NoError(t, err)
	require.True(t, d.FromHost)
	require.Empty(t, d.Payload)
}

func TestSealRejects(t *testing.T) {
	k := testKeys(t, "1.2.3.4")
	_, err := k.Seal(&Datagram{Version: 3, Channel: ChannelControl})
	require.ErrorIs(t, err, ErrVersion)
	_, err = k.Seal(&Datagram{Version: Version5, Channel: 9})
	require.ErrorIs(t, err, ErrChannel)
	_, err = k.Seal(&Datagram{Version: Version5, Channel: ChannelControl, Seq: 1 << 56})
	require.Error(t, err)
	_, err = k.Seal(&Datagram{Version: Version5, Channel: ChannelControl, Payload: make([]byte, MaxPayload+1)})
	require.ErrorIs(t, err, ErrTooLong)
}
