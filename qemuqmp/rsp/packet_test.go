package rsp

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEncodeReadRoundTrip(t *testing.T) {
	for _, p := range []string{"", "OK", "m100000,800", "$#}*", "T05thread:p01.02;", strings.Repeat("ab", 2048)} {
		got, err := ReadPacket(bufio.NewReader(bytes.NewReader(append([]byte("+-"), Encode([]byte(p))...))))
		require.NoError(t, err, p)
		require.Equal(t, p, string(got))
	}
}

func TestEncodeKnownFrames(t *testing.T) {
	require.Equal(t, "$g#67", string(Encode([]byte("g"))))
	require.Equal(t, "$OK#9a", string(Encode([]byte("OK"))))
	require.Equal(t, "$}]#da", string(Encode([]byte("}"))), "} is escaped as }] and the checksum covers the escape")
}

func TestReadPacketErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{"bad checksum", "$OK#00", ErrChecksum},
		{"bad checksum digits", "$OK#zz", ErrMalformed},
		{"escape at end", "$}#7d", ErrMalformed},
		{"rle without byte", "$*##cd", ErrMalformed},
		{"rle negative count", "$a*\x01#8c", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadPacket(bufio.NewReader(strings.NewReader(tt.in)))
			require.ErrorIs(t, err, tt.want)
		})
	}
	_, err := ReadPacket(bufio.NewReader(strings.NewReader("$OK")))
	require.Error(t, err, "truncated stream")
}

func TestDecodeRunLength(t *testing.T) {
	// "0* " is '0' followed by ' '-29 = 3 more copies.
	got, err := DecodePayload([]byte("0* 1"))
	require.NoError(t, err)
	require.Equal(t, "00001", string(got))
}

func TestReplyError(t *testing.T) {
	var se *StubError
	require.ErrorAs(t, replyError([]byte("E14")), &se)
	require.EqualValues(t, CodeFault, se.Code)
	require.True(t, IsFault(replyError([]byte("E14"))))
	require.NoError(t, replyError([]byte("OK")))
	require.NoError(t, replyError([]byte("E1")))
	require.NoError(t, replyError([]byte("e14")))
}

func FuzzReadPacket(f *testing.F) {
	f.Add([]byte("$OK#9a"))
	f.Add([]byte("+$T05thread:p01.01;#06"))
	f.Add(Encode([]byte("}$#*")))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		for range 16 {
			p, err := ReadPacket(br)
			if err != nil {
				return
			}
			if len(p) > MaxPacket {
				t.Fatalf("payload of %d bytes exceeds the cap", len(p))
			}
			// Whatever decodes must survive a re-encode round trip.
			again, err := ReadPacket(bufio.NewReader(bytes.NewReader(Encode(p))))
			require.NoError(t, err)
			require.Equal(t, p, again)
		}
	})
}
