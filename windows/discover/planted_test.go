package discover

import (
	"context"
	"encoding/binary"
	"math/rand"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/shareddata"
	"github.com/kdstub/kdstub/windows/kdbg"
	"github.com/kdstub/kdstub/windows/machine"
	"github.com/kdstub/kdstub/windows/paging"
	"github.com/kdstub/kdstub/windows/pe"
)

// synthKernel maps a minimal ntoskrnl-shaped image (header page + a .data section) at base with 4-level tables in
// a SparseMemory, and returns the address space and a writer for .data.
func synthKernel(t *testing.T, base uint64, dataRVA, dataSize uint32) (*paging.AddressSpace, func(rva uint32, b []byte)) {
	t.Helper()
	mem := machine.NewSparseMemory()
	next := uint64(0x100000)
	alloc := func() uint64 { p := next; next += 0x1000; mem.Write(p, make([]byte, 0x1000)); return p }
	root := alloc()
	mapPage := func(va, pa uint64) {
		table := root
		for level := 4; level > 1; level-- {
			slot := table + (va>>(12+9*uint(level-1))&0x1FF)*8
			var e [8]byte
			_ = mem.ReadPhysical(context.Background(), slot, e[:])
			v := binary.LittleEndian.Uint64(e[:])
			if v&1 == 0 {
				v = alloc() | 3
				binary.LittleEndian.PutUint64(e[:], v)
				mem.Write(slot, e[:])
			}
			table = v & paging.DTBMask
		}
		var e [8]byte
		binary.LittleEndian.PutUint64(e[:], pa|3)
		mem.Write(table+(va>>12&0x1FF)*8, e[:])
	}
	size := dataRVA + dataSize
	hdr := make([]byte, 0x1000)
	hdr[0], hdr[1] = 'M', 'Z'
	binary.LittleEndian.PutUint32(hdr[0x3C:], 0x80)
	binary.LittleEndian.PutUint32(hdr[0x80:], 0x4550)
	binary.LittleEndian.PutUint16(hdr[0x84:], pe.MachineAMD64)
	binary.LittleEndian.PutUint16(hdr[0x86:], 1)
	binary.LittleEndian.PutUint16(hdr[0x94:], 0xF0)
	oh := 0x98
	binary.LittleEndian.PutUint16(hdr[oh:], 0x20B)
	binary.LittleEndian.PutUint64(hdr[oh+0x18:], base)
	binary.LittleEndian.PutUint32(hdr[oh+0x38:], size)
	binary.LittleEndian.PutUint32(hdr[oh+0x3C:], 0x400)
	binary.LittleEndian.PutUint16(hdr[oh+0x44:], 1)
	binary.LittleEndian.PutUint32(hdr[oh+0x6C:], 16)
	st := oh + 0xF0
	copy(hdr[st:], ".data")
	binary.LittleEndian.PutUint32(hdr[st+8:], dataSize)
	binary.LittleEndian.PutUint32(hdr[st+12:], dataRVA)
	binary.LittleEndian.PutUint32(hdr[st+36:], 0xC8000040)
	hp := alloc()
	mem.Write(hp, hdr)
	mapPage(base, hp)
	pages := map[uint32]uint64{}
	for rva := dataRVA; rva < size; rva += 0x1000 {
		p := alloc()
		pages[rva] = p
		mapPage(base+uint64(rva), p)
	}
	write := func(rva uint32, b []byte) {
		for len(b) > 0 {
			page := rva &^ 0xFFF
			n := min(len(b), int(0x1000-rva&0xFFF))
			mem.Write(pages[page]+uint64(rva&0xFFF), b[:n])
			b, rva = b[n:], rva+uint32(n)
		}
	}
	return paging.New(mem, root, paging.ModeX64), write
}

// TestRealKDBGReencodedAndPlantedIsFound plants the triage dump's real KDBG, encoded with random keys, at its real
// RVA in a synthetic kernel image and lets the symbol-less .data scan find and decode it.
func TestRealKDBGReencodedAndPlantedIsFound(t *testing.T) {
	data, err := os.ReadFile(shareddata.Require(t, "testdata/dumps/win10-19041-x64-triage.dmp"))
	require.NoError(t, err)
	const off = 0x104A8 // decoded KDBG copy (windows-internals §9.1)
	plain := kdbg.Block(data[off : off+int(binary.LittleEndian.Uint32(data[off+0x14:]))])
	base := plain.KernBase()
	rva := uint32(binary.LittleEndian.Uint64(data[0x80:]) - base) // DUMP_HEADER64.KdDebuggerDataBlock
	r := rand.New(rand.NewSource(99))
	for i := 0; i < 3; i++ {
		space, write := synthKernel(t, base, rva&^0xFFFF, 0x10000)
		junk := make([]byte, 0x10000)
		r.Read(junk)
		write(rva&^0xFFFF, junk)
		keys := kdbg.Keys{N: r.Uint64(), W: r.Uint64(), A: base + 0xC50D00}
		write(rva, kdbg.Encode(plain, keys))
		im, err := pe.Open(context.Background(), space, base)
		require.NoError(t, err)
		k := newKernel(space)
		k.Base, k.Image = base, im
		sec, ok := im.Section(".data")
		require.True(t, ok)
		va, got, cand := scanDataForKDBG(context.Background(), k, sec)
		require.Equal(t, base+uint64(rva), va)
		require.True(t, cand.Encoded)
		require.Equal(t, []byte(plain), []byte(got))
	}
}
