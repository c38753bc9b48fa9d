package paging

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/kdstub/kdstub/windows/machine"
)

// FuzzWalk runs translations and enumeration over hostile page tables: 4 pages of attacker bytes at PA 0..0x4000
// (every entry may point anywhere, at itself, or outside memory). Nothing may panic or loop.
func FuzzWalk(f *testing.F) {
	tb := newTables(ModeX64)
	tb.mapPage(0xFFFFF80400001000, 0x5000, 1, 3)
	seed := make([]byte, 0x4000)
	for pa := uint64(0); pa < 0x4000; pa += 0x1000 {
		p := tb.mem.Pages[tb.root+pa]
		if p != nil {
			copy(seed[pa:], p)
		}
	}
	f.Add(seed, uint64(0), uint64(0xFFFFF80400001000), uint8(4))
	self := make([]byte, 0x1000)
	binary.LittleEndian.PutUint64(self[0x1ED*8:], 0x3) // self-map at PA 0
	f.Add(self, uint64(0), uint64(0xFFFFF6FB7DBED000), uint8(4))
	f.Fuzz(func(t *testing.T, data []byte, dtb, va uint64, mode uint8) {
		m := machine.NewSparseMemory()
		if len(data) > 0x8000 {
			data = data[:0x8000]
		}
		m.Write(0, data)
		md := Mode(2 + int(mode)%4)
		as := New(m, dtb, md)
		ctx := context.Background()
		_, _ = as.Translate(ctx, va)
		buf := make([]byte, 64)
		_ = as.ReadVirtual(ctx, va, buf)
		if md == ModeX64 || md == ModeX64LA57 {
			n := 0
			_ = as.Enumerate(ctx, 0, ^uint64(0), func(_, _, _ uint64) bool { n++; return n < 1000 })
		}
	})
}
