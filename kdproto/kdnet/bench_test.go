package kdnet

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"testing"
	"time"
)

// BenchmarkOpen measures opening a GetContext-sized datagram (1334 bytes) against a raw baseline of the same
// work done inline (one CBC decryption and one HMAC-SHA256 over the same bytes). The reported ratio
// open/raw shows the framing and validation overhead; it should stay close to 1.
func BenchmarkOpen(b *testing.B) {
	k := NewKeys(ControlKey{1})
	k.SetDataKey([32]byte{2})
	dg, err := k.Seal(&Datagram{Version: Version5, Channel: ChannelData, Seq: 1, Payload: make([]byte, 1296)})
	if err != nil {
		b.Fatal(err)
	}
	blk, _ := aes.NewCipher(k.dataKey[:])
	hk := k.hmacKey
	raw := func() {
		enc := dg[headerSize : len(dg)-TagSize]
		plain := make([]byte, headerSize+len(enc))
		copy(plain, dg[:headerSize])
		cipher.NewCBCDecrypter(blk, dg[len(dg)-TagSize:]).CryptBlocks(plain[headerSize:], enc)
		m := hmac.New(sha256.New, hk[:])
		m.Write(plain)
		_ = m.Sum(nil)
	}
	const rounds = 2000
	var rawNs, openNs float64
	b.ResetTimer()
	for b.Loop() {
		start := nowNs()
		for range rounds {
			raw()
		}
		mid := nowNs()
		for range rounds {
			if _, err := k.Open(dg); err != nil {
				b.Fatal(err)
			}
		}
		end := nowNs()
		rawNs += float64(mid - start)
		openNs += float64(end - mid)
	}
	b.ReportMetric(openNs/rawNs, "open/raw")
	b.SetBytes(int64(len(dg)) * rounds * 2)
}

func nowNs() int64 { return time.Now().UnixNano() }
