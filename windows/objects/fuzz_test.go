package objects

import (
	"context"
	"encoding/binary"
	"testing"
)

// FuzzWalkers walks lists and strings through hostile memory: 3 pages of attacker bytes at 0x1000.
func FuzzWalkers(f *testing.F) {
	seed := make([]byte, 0x3000)
	binary.LittleEndian.PutUint64(seed[0:], 0x1100)
	binary.LittleEndian.PutUint64(seed[0x100:], 0x1000)
	binary.LittleEndian.PutUint16(seed[0x200:], 8)
	binary.LittleEndian.PutUint64(seed[0x208:], 0x1300)
	copy(seed[0x300:], utf16le("abcd"))
	f.Add(seed, uint64(0x1000), uint64(0x1200))
	f.Fuzz(func(t *testing.T, data []byte, head, str uint64) {
		m := vmem{}
		m.write(0x1000, data[:min(len(data), 0x3000)])
		ctx := context.Background()
		n := 0
		_ = WalkList(ctx, m, head, 8, 1000, func(uint64) error { n++; return nil })
		if n > 1000 {
			t.Fatalf("walk exceeded its bound: %d", n)
		}
		_ = WalkList(ctx, m, head, 4, 1000, func(uint64) error { return nil })
		if s, err := ReadUnicodeString(ctx, m, str, 8); err == nil && len([]rune(s)) > MaxStringBytes/2 {
			t.Fatalf("string not clamped: %d runes", len([]rune(s)))
		}
		_, _ = ReadUnicodeString(ctx, m, str, 4)
		_, _ = KernelModules(ctx, m, head)
		_, _ = UserModules(ctx, m, head, str)
	})
}

// FuzzDetectOffsets runs offset detection on hostile EPROCESS bytes (with the accessor decoder on hostile code).
func FuzzDetectOffsets(f *testing.F) {
	b := make([]byte, 0x800)
	b[0] = 3
	binary.LittleEndian.PutUint64(b[0x440:], 4)
	binary.LittleEndian.PutUint64(b[0x448:], 0xFFFFA00000002448)
	binary.LittleEndian.PutUint64(b[0x450:], 0xFFFFF80000C1E200)
	copy(b[0x5A8:], "System\x00")
	f.Add(b, []byte{0x48, 0x8B, 0x81, 0x40, 0x04, 0, 0, 0xC3})
	f.Fuzz(func(t *testing.T, eproc, code []byte) {
		_, _ = DecodeGetter(code)
		o, err := DetectOffsets(context.Background(), Probe{Buf: eproc, VA: 0xFFFFA00000001000,
			Getters: map[string][]byte{"PsGetProcessId": code, "PsGetProcessImageFileName": code}, Mem: vmem{}})
		if err != nil {
			return
		}
		_, _ = ReadProcess(context.Background(), vmem{}, 0, o)
	})
}
