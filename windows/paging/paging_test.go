package paging

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/windows/machine"
	"github.com/stretchr/testify/require"
)

// tables builds long-mode page tables in a SparseMemory.
type tables struct {
	mem  *machine.SparseMemory
	next uint64
	root uint64
	mode Mode
}

func newTables(mode Mode) *tables {
	t := &tables{mem: machine.NewSparseMemory(), next: 0x100000, mode: mode}
	t.root = t.alloc()
	return t
}

func (t *tables) alloc() uint64 {
	pa := t.next
	t.next += 0x1000
	t.mem.Write(pa, make([]byte, 4096))
	return pa
}

func (t *tables) entry(pa uint64) uint64 {
	var b [8]byte
	_ = t.mem.ReadPhysical(context.Background(), pa, b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func (t *tables) set(pa, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	t.mem.Write(pa, b[:])
}

// mapPage maps va at leaf level leafLevel (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB) with the given leaf entry flags.
func (t *tables) mapPage(va, pa uint64, leafLevel int, leaf uint64) {
	table := t.root
	for level := int(t.mode); level > leafLevel; level-- {
		slot := table + (va>>(12+9*uint(level-1))&0x1FF)*8
		e := t.entry(slot)
		if e&1 == 0 {
			e = t.alloc() | 0x3
			t.set(slot, e)
		}
		table = e & frameMask64
	}
	slot := table + (va>>(12+9*uint(leafLevel-1))&0x1FF)*8
	if leafLevel > 1 {
		leaf |= pteLarge
	}
	t.set(slot, pa|leaf)
}

func TestTranslateLongMode(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []Mode{ModeX64, ModeX64LA57} {
		tb := newTables(mode)
		tb.mapPage(0xFFFFF80400001000, 0x5000, 1, 0x3)
		tb.mapPage(0xFFFFF80400200000, 0x4000_0000, 2, 0x3)
		tb.mapPage(0x0000_0040_0000_0000, 0x8000_0000, 3, 0x3)
		tb.mapPage(0xFFFFF80400003000, 0x7000, 1, pteTransition) // transition: still in RAM
		tb.mapPage(0xFFFFF80400004000, 0x8000, 1, 0)             // demand zero / paged out
		if mode == ModeX64LA57 {
			tb.mapPage(0xFF12_3456_7800_0000, 0x9000, 1, 0x3)
		}
		as := New(tb.mem, tb.root|0x5, mode) // PCID bits must be masked
		cases := []struct {
			va, pa uint64
			size   uint64
		}{
			{0xFFFFF80400001234, 0x5234, 4096},
			{0xFFFFF804002ABCDE, 0x4000_0000 + 0xABCDE, 2 << 20},
			{0x0000_0040_1234_5678, 0x8000_0000 + 0x1234_5678, 1 << 30},
			{0xFFFFF80400003010, 0x7010, 4096},
		}
		if mode == ModeX64LA57 {
			cases = append(cases, struct{ va, pa, size uint64 }{0xFF12_3456_7800_0008, 0x9008, 4096})
		}
		for _, c := range cases {
			tr, err := as.Lookup(ctx, c.va)
			require.NoError(t, err, "%s VA %#x", mode, c.va)
			require.Equal(t, c.pa, tr.PA, "%s VA %#x", mode, c.va)
			require.Equal(t, c.size, tr.Size)
			pa, err := as.Translate(ctx, c.va)
			require.NoError(t, err)
			require.Equal(t, c.pa, pa)
		}
		_, err := as.Translate(ctx, 0xFFFFF80400004000)
		var np *NotPresentError
		require.ErrorAs(t, err, &np)
		require.Equal(t, 1, np.Level)
		require.ErrorIs(t, err, ErrNotPresent)
		require.Contains(t, err.Error(), "page not present at VA 0xfffff80400004000 (level 1")
		_, err = as.Translate(ctx, 0xFFFF_9000_0000_0000)
		require.ErrorAs(t, err, &np)
		require.Equal(t, 4, np.Level) // PML5[0x1FF] exists in LA57 (shared with the kernel mappings)
		if mode == ModeX64 {
			_, err = as.Translate(ctx, 0x0000_9000_0000_0000)
			var nc *NonCanonicalError
			require.ErrorAs(t, err, &nc)
		}
	}
}

func TestPrototypePTEResolvesThroughPrototype(t *testing.T) {
	ctx := context.Background()
	tb := newTables(ModeX64)
	// The prototype PTE array lives in a kernel page at protoVA (PA 0x20000).
	const protoVA = 0xFFFF_8A01_2345_6000
	tb.mapPage(protoVA, 0x20000, 1, 0x3)
	tb.set(0x20000+0x18, 0x33000|0x1)                                            // prototype #3: valid, frame 0x33000
	tb.set(0x20000+0x20, 0x34000|pteTransition)                                  // prototype #4: transition
	tb.set(0x20000+0x28, 0)                                                      // prototype #5: paged out
	proto := func(slot uint64) uint64 { return (protoVA+slot*8)<<16 | pteProto } // ProtoAddress in bits 63:16
	tb.mapPage(0x0000_7FF6_0000_0000, 0, 1, 0)
	tb.set(tb.leafSlot(0x0000_7FF6_0000_0000), proto(3))
	tb.mapPage(0x0000_7FF6_0000_1000, 0, 1, 0)
	tb.set(tb.leafSlot(0x0000_7FF6_0000_1000), proto(4))
	tb.mapPage(0x0000_7FF6_0000_2000, 0, 1, 0)
	tb.set(tb.leafSlot(0x0000_7FF6_0000_2000), proto(5))

	as := New(tb.mem, tb.root, ModeX64)
	pa, err := as.Translate(ctx, 0x0000_7FF6_0000_0010)
	require.NoError(t, err)
	require.Equal(t, uint64(0x33010), pa)
	pa, err = as.Translate(ctx, 0x0000_7FF6_0000_1020)
	require.NoError(t, err)
	require.Equal(t, uint64(0x34020), pa)
	_, err = as.Translate(ctx, 0x0000_7FF6_0000_2000)
	require.ErrorIs(t, err, ErrNotPresent)
}

func (t *tables) leafSlot(va uint64) uint64 {
	table := t.root
	for level := int(t.mode); level > 1; level-- {
		table = t.entry(table+(va>>(12+9*uint(level-1))&0x1FF)*8) & frameMask64
	}
	return table + (va>>12&0x1FF)*8
}

func TestTranslate32Bit(t *testing.T) {
	ctx := context.Background()
	m := machine.NewSparseMemory()
	put32 := func(pa uint64, v uint32) {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		m.Write(pa, b[:])
	}
	put64 := func(pa uint64, v uint64) {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], v)
		m.Write(pa, b[:])
	}
	// Non-PAE: PD at 0x1000, PT at 0x2000.
	m.Write(0x1000, make([]byte, 4096))
	m.Write(0x2000, make([]byte, 4096))
	put32(0x1000+0x200*4, 0x2000|3)              // VA 0x80000000.. → PT 0x2000
	put32(0x2000+5*4, 0x0055_5000|3)             // VA 0x80005000 → 0x555000
	put32(0x1000+0x300*4, 0x0140_0000|0x83)      // VA 0xC0000000 4 MiB page → 0x1400000
	put32(0x2000+6*4, 0x0066_6000|pteTransition) // transition
	as := New(m, 0x1000, ModeX86)
	pa, err := as.Translate(ctx, 0x80005123)
	require.NoError(t, err)
	require.Equal(t, uint64(0x555123), pa)
	pa, err = as.Translate(ctx, 0xC0123456)
	require.NoError(t, err)
	require.Equal(t, uint64(0x1400000+0x123456), pa)
	pa, err = as.Translate(ctx, 0x80006010)
	require.NoError(t, err)
	require.Equal(t, uint64(0x666010), pa)
	_, err = as.Translate(ctx, 0x80007000)
	require.ErrorIs(t, err, ErrNotPresent)
	_, err = as.Translate(ctx, 0x1_0000_0000)
	require.Error(t, err)

	// PAE: PDPT at 0x3020 (32-byte aligned), PD at 0x4000, PT at 0x5000.
	m.Write(0x3000, make([]byte, 4096))
	m.Write(0x4000, make([]byte, 4096))
	m.Write(0x5000, make([]byte, 4096))
	put64(0x3020+2*8, 0x4000|1)         // VA 0x80000000..0xBFFFFFFF
	put64(0x4000+1*8, 0x5000|3)         // VA 0x80200000..
	put64(0x5000+3*8, 0x1_2345_6000|3)  // VA 0x80203000 → above 4 GiB
	put64(0x4000+2*8, 0x0060_0000|0x83) // VA 0x80400000 2 MiB → 0x600000
	pae := New(m, 0x3020, ModePAE)
	pa, err = pae.Translate(ctx, 0x80203ABC)
	require.NoError(t, err)
	require.Equal(t, uint64(0x1_2345_6ABC), pa)
	pa, err = pae.Translate(ctx, 0x80412345)
	require.NoError(t, err)
	require.Equal(t, uint64(0x612345), pa)
	_, err = pae.Translate(ctx, 0x40000000)
	var np *NotPresentError
	require.ErrorAs(t, err, &np)
	require.Equal(t, 3, np.Level)
}

func TestReadVirtualCrossesPagesAndInvalidate(t *testing.T) {
	ctx := context.Background()
	tb := newTables(ModeX64)
	tb.mapPage(0xFFFFF80000000000, 0x50000, 1, 3)
	tb.mapPage(0xFFFFF80000001000, 0x70000, 1, 3)
	tb.mem.Write(0x50FFE, []byte{1, 2})
	tb.mem.Write(0x70000, []byte{3, 4})
	as := New(tb.mem, tb.root, ModeX64)
	buf := make([]byte, 4)
	require.NoError(t, as.ReadVirtual(ctx, 0xFFFFF80000000FFE, buf))
	require.Equal(t, []byte{1, 2, 3, 4}, buf)

	// Remap the second page; the cache hides it until Invalidate.
	tb.mapPage(0xFFFFF80000001000, 0x90000, 1, 3)
	tb.mem.Write(0x90000, []byte{9, 9})
	require.NoError(t, as.ReadVirtual(ctx, 0xFFFFF80000000FFE, buf))
	require.Equal(t, []byte{1, 2, 3, 4}, buf)
	as.Invalidate()
	require.NoError(t, as.ReadVirtual(ctx, 0xFFFFF80000000FFE, buf))
	require.Equal(t, []byte{1, 2, 9, 9}, buf)

	err := as.ReadVirtual(ctx, 0xFFFFF80000001FFE, buf)
	require.ErrorIs(t, err, ErrNotPresent)
	require.Contains(t, err.Error(), "read 0x4 bytes at VA 0xfffff80000001ffe")
}

func TestEnumerate(t *testing.T) {
	tb := newTables(ModeX64)
	tb.mapPage(0xFFFFF80400000000, 0x4000_0000, 2, 3)
	tb.mapPage(0xFFFFF80400200000, 0x4020_0000, 2, 3)
	tb.mapPage(0xFFFFF80400400000, 0x5000, 1, 3)
	tb.mapPage(0xFFFFF90000000000, 0x6000, 1, 3) // outside the window
	as := New(tb.mem, tb.root, ModeX64)
	type m struct{ va, pa, size uint64 }
	var got []m
	require.NoError(t, as.Enumerate(context.Background(), 0xFFFFF80000000000, 0xFFFFF80800000000, func(va, pa, size uint64) bool {
		got = append(got, m{va, pa, size})
		return true
	}))
	require.Equal(t, []m{
		{0xFFFFF80400000000, 0x4000_0000, 2 << 20},
		{0xFFFFF80400200000, 0x4020_0000, 2 << 20},
		{0xFFFFF80400400000, 0x5000, 4096},
	}, got)
}

func TestModeFromRegisters(t *testing.T) {
	cases := []struct {
		r    amd64.Registers
		want Mode
	}{
		{amd64.Registers{CR0: amd64.CR0PG, CR4: amd64.CR4PAE, EFER: amd64.EFERLMA}, ModeX64},
		{amd64.Registers{CR0: amd64.CR0PG, CR4: amd64.CR4PAE | amd64.CR4LA57, EFER: amd64.EFERLMA}, ModeX64LA57},
		{amd64.Registers{CR0: amd64.CR0PG, CR4: amd64.CR4PAE}, ModePAE},
		{amd64.Registers{CR0: amd64.CR0PG}, ModeX86},
	}
	for _, c := range cases {
		got, err := ModeFromRegisters(&c.r)
		require.NoError(t, err)
		require.Equal(t, c.want, got)
	}
	_, err := ModeFromRegisters(&amd64.Registers{})
	require.Error(t, err)
}
