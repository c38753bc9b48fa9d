package dump

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// sparseMemory is a synthetic guest-physical image: only the pages inside runs exist.
type sparseMemory struct {
	runs  []Run
	pages map[uint64][]byte
}

func newSparseMemory(rng *rand.Rand, runs []Run) *sparseMemory {
	m := &sparseMemory{runs: runs, pages: map[uint64][]byte{}}
	for _, r := range runs {
		for p := r.BasePage; p < r.BasePage+r.PageCount; p++ {
			pg := make([]byte, PageSize)
			for i := range pg {
				pg[i] = byte(rng.Uint32())
			}
			m.pages[p] = pg
		}
	}
	return m
}

func (m *sparseMemory) ReadPhysical(_ context.Context, pa uint64, buf []byte) error {
	for done := 0; done < len(buf); {
		cur := pa + uint64(done)
		pg, ok := m.pages[cur/PageSize]
		if !ok {
			return &NotPresentError{Addr: cur}
		}
		done += copy(buf[done:], pg[cur%PageSize:])
	}
	return nil
}

// randomHeader fills every header field with seeded random values, as a round trip must keep them all.
func randomHeader(rng *rand.Rand, runs []Run) *Header {
	h := &Header{
		MajorVersion:        0xF,
		MinorVersion:        rng.Uint32N(30000),
		DTB:                 rng.Uint64() &^ 0xFFF,
		PfnDataBase:         rng.Uint64(),
		PsLoadedModuleList:  rng.Uint64(),
		PsActiveProcessHead: rng.Uint64(),
		MachineImageType:    0x8664,
		NumberProcessors:    1 + rng.Uint32N(64),
		BugCheckCode:        rng.Uint32(),
		KdDebuggerDataBlock: rng.Uint64(),
		PhysicalMemoryValid: true,
		Runs:                runs,
		Context:             make([]byte, ContextSize),
		SystemTime:          rng.Uint64(),
		Comment:             "kdstub test dump",
		SystemUpTime:        rng.Uint64(),
		MiniDumpFields:      rng.Uint32(),
		SecondaryDataState:  rng.Uint32(),
		ProductType:         rng.Uint32(),
		SuiteMask:           rng.Uint32(),
		WriterStatus:        rng.Uint32(),
		KdSecondaryVersion:  uint8(rng.Uint32()),
		Attributes:          rng.Uint32(),
		BootID:              rng.Uint32(),
		Exception: ExceptionRecord{
			Code: rng.Uint32(), Flags: rng.Uint32(), Record: rng.Uint64(), Address: rng.Uint64(),
			NumberParameters: rng.Uint32N(16),
		},
	}
	for i := range h.BugCheckParameters {
		h.BugCheckParameters[i] = rng.Uint64()
	}
	for i := range h.Exception.Information {
		h.Exception.Information[i] = rng.Uint64()
	}
	for i := range h.Context {
		h.Context[i] = byte(rng.Uint32())
	}
	for _, r := range runs {
		h.NumberOfPages += r.PageCount
	}
	return h
}

// writeDump writes mem with layout and returns the bytes.
func writeDump(t testing.TB, h *Header, mem PhysicalMemory, layout Layout) []byte {
	t.Helper()
	var out bytes.Buffer
	require.NoError(t, Write(context.Background(), &out, h, mem, layout))
	return out.Bytes()
}

// synthTriage describes a small synthetic triage dump built by buildTriage.
type synthTriage struct {
	kdbgVA, kpbVA, prcbVA, threadVA, processVA, stackVA uint64
	kdbg, prcb, process, thread, stack                  []byte
	blocks                                              []synthBlock
	drivers                                             []synthDriver
}

type synthBlock struct {
	va   uint64
	data []byte
}

type synthDriver struct {
	name          string
	base          uint64
	size, stamp   uint32
	badNameOffset bool
}

// newSynthTriage returns a consistent synthetic triage description: the KDBG names the structure sizes,
// the KPRCB names its current thread, the thread names its process, and a data block holds
// KiProcessorBlock[0] = the KPRCB's VA.
func newSynthTriage(rng *rand.Rand) *synthTriage {
	s := &synthTriage{
		kdbgVA:    0xFFFFF80000600B20,
		kpbVA:     0xFFFFF800006FDC80,
		prcbVA:    0xFFFFF80001234180,
		threadVA:  0xFFFFA00000001640,
		processVA: 0xFFFFA00000004180,
		stackVA:   0xFFFF900000001EE8,
	}
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	le := binary.LittleEndian
	s.kdbg = rnd(0x380)
	copy(s.kdbg[0x10:], "KDBG")
	le.PutUint32(s.kdbg[0x14:], 0x380)
	le.PutUint64(s.kdbg[kdbgKiProcessorBlock:], s.kpbVA)
	le.PutUint16(s.kdbg[kdbgOffsetKThreadApcProcess:], 0xB8)
	le.PutUint16(s.kdbg[kdbgSizeEProcess:], 0x300)
	le.PutUint16(s.kdbg[kdbgSizePrcb:], 0x400)
	le.PutUint16(s.kdbg[kdbgOffsetPrcbCurrentThread:], 0x8)
	le.PutUint16(s.kdbg[kdbgOffsetPrcbNumber:], 0x24)
	le.PutUint16(s.kdbg[kdbgSizeEThread:], 0x200)
	s.prcb = rnd(0x400)
	le.PutUint64(s.prcb[0x8:], s.threadVA)
	le.PutUint32(s.prcb[0x24:], 1) // CPU 1
	s.process = rnd(0x300)
	s.thread = rnd(0x200)
	le.PutUint64(s.thread[0xB8:], s.processVA)
	s.stack = rnd(0x118)
	kpb := make([]byte, 16)
	le.PutUint64(kpb[8:], s.prcbVA) // KiProcessorBlock[1]
	s.blocks = []synthBlock{
		{va: s.kpbVA, data: kpb},
		{va: 0xFFFFF80000000000, data: rnd(0x1000)},
		// Overlaps the previous block's tail: the earlier-starting block owns the shared bytes.
		{va: 0xFFFFF80000000F00, data: rnd(0x200)},
		// Covers the KDBG's VA with different (say, encoded) bytes: the KDBG copy must win.
		{va: s.kdbgVA - 0x20, data: rnd(0x400)},
	}
	s.drivers = []synthDriver{
		{name: `\SystemRoot\system32\ntoskrnl.exe`, base: 0xFFFFF80000000000, size: 0x1046000, stamp: rng.Uint32()},
		{name: `\SystemRoot\system32\hal.dll`, base: 0xFFFFF80001100000, size: 0x6000, stamp: rng.Uint32()},
		{name: "ignored", base: 0xFFFFF80001200000, size: 0x2000, badNameOffset: true},
	}
	return s
}

// build lays the description out as a triage dump file.
func (s *synthTriage) build() []byte {
	le := binary.LittleEndian
	h := &Header{MajorVersion: 0xF, MinorVersion: 0x4A61, MachineImageType: 0x8664, NumberProcessors: 2,
		KdDebuggerDataBlock: s.kdbgVA, DumpType: TypeTriage, Context: make([]byte, ContextSize)}
	hb, err := h.encode()
	if err != nil {
		panic(err)
	}
	out := slices.Clone(hb)
	out = append(out, make([]byte, triageHeaderSize)...)
	tri := func(off int, v uint32) { le.PutUint32(out[HeaderSize+off:], v) }
	place := func(b []byte) uint32 {
		off := uint32(len(out))
		out = append(out, b...)
		return off
	}
	tri(0x1C, place(s.prcb))
	tri(0x20, place(s.process))
	tri(0x24, place(s.thread))
	tri(0x28, place(s.stack))
	tri(0x2C, uint32(len(s.stack)))
	le.PutUint64(out[HeaderSize+0x48:], s.stackVA)
	tri(0x70, place(s.kdbg))
	tri(0x74, uint32(len(s.kdbg)))

	// String pool first so driver entries can point at it.
	nameOffs := make([]uint32, len(s.drivers))
	for i, d := range s.drivers {
		u := utf16Encode(d.name)
		e := make([]byte, 4+len(u)+2)
		le.PutUint32(e, uint32(len(u)/2))
		copy(e[4:], u)
		nameOffs[i] = place(e)
		if d.badNameOffset {
			nameOffs[i] = 0xFFFFFFF0
		}
	}
	entries := make([]byte, driverEntrySize*len(s.drivers))
	for i, d := range s.drivers {
		e := entries[i*driverEntrySize:]
		le.PutUint32(e, nameOffs[i])
		k := e[driverLdrOffset:]
		le.PutUint64(k[kldrDllBase:], d.base)
		le.PutUint32(k[kldrSizeOfImage:], d.size)
		le.PutUint32(k[kldrTimeDateStamp:], d.stamp)
	}
	tri(0x30, place(entries))
	tri(0x34, uint32(len(s.drivers)))

	recs := make([]byte, dataBlockSize*(len(s.blocks)+1))
	for i, b := range s.blocks {
		off := place(b.data)
		le.PutUint64(recs[i*dataBlockSize:], b.va)
		le.PutUint32(recs[i*dataBlockSize+8:], off)
		le.PutUint32(recs[i*dataBlockSize+12:], uint32(len(b.data)))
	}
	// A final record pointing past the end of the file must be ignored.
	last := len(s.blocks) * dataBlockSize
	le.PutUint64(recs[last:], 0xFFFFF80077770000)
	le.PutUint32(recs[last+8:], 0x7FFFFFF0)
	le.PutUint32(recs[last+12:], 0x100)
	tri(0x78, place(recs))
	tri(0x7C, uint32(len(s.blocks)+1))
	return out
}

func utf16Encode(s string) []byte {
	var b []byte
	for _, r := range s {
		b = binary.LittleEndian.AppendUint16(b, uint16(r))
	}
	return b
}
