package dump

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/kdstub/kdstub/internal/shareddata"
)

// FuzzNew feeds hostile bytes to New and, when they parse, to every reader. Self-made seeds live in
// testdata/fuzz/FuzzNew. Of the real triage dump only the two headers are added here: the fuzzer minimizes
// each new input, which takes minutes on a 1.4 MB one; FuzzPatchedDump covers the whole real file instead.
func FuzzNew(f *testing.F) {
	if b := realDumpBytes(); b != nil {
		f.Add(b[:HeaderSize+triageHeaderSize], uint64(realKDBG), uint16(0x40))
	}
	f.Fuzz(func(t *testing.T, data []byte, addr uint64, n uint16) {
		exerciseDump(t, data, addr, n)
	})
}

// FuzzPatchedDump applies a list of small overwrites to a complete base dump and exercises the result.
// patches is a sequence of {offset u32 (mod the base size), length u8, bytes}. The fuzzer's inputs stay
// small, so minimizing them is cheap (raw 8 KiB+ dumps make Go's quadratic minimizer eat whole runs), while
// the mutations land anywhere in a complete dump: the real triage dump when the shared data is present, and
// self-made full, bitmap and triage dumps.
func FuzzPatchedDump(f *testing.F) {
	bases := fuzzBases()
	patch := func(off uint32, b ...byte) []byte {
		return append(binary.LittleEndian.AppendUint32(nil, off), append([]byte{byte(len(b))}, b...)...)
	}
	for i := range bases {
		f.Add(uint8(i), patch(offDumpType, 4, 0, 0, 0), uint64(0), uint16(8))
		f.Add(uint8(i), patch(HeaderSize+0x34, 0xFF, 0xFF, 0, 0), uint64(0), uint16(8)) // driver count
		f.Add(uint8(i), append(patch(HeaderSize+0x30, 0x10, 0, 0, 0), patch(HeaderSize+0x7C, 0xFF, 0xFF, 0xFF, 0)...),
			uint64(realKernBase), uint16(16))
		f.Add(uint8(i), patch(offPhysicalMemoryBlock, 2, 0, 0, 0, 0, 0, 0, 0, 9), uint64(0x1000), uint16(16))
		f.Add(uint8(i), patch(offDumpType, 5, 0, 0, 0), uint64(0x5000), uint16(16))
	}
	f.Fuzz(func(t *testing.T, which uint8, patches []byte, addr uint64, n uint16) {
		base := bases[int(which)%len(bases)]
		data := bytes.Clone(base)
		for len(patches) >= 5 {
			at := int(binary.LittleEndian.Uint32(patches) % uint32(len(data)))
			l := min(int(patches[4]), len(patches)-5)
			copy(data[at:], patches[5:5+l])
			patches = patches[5+l:]
		}
		exerciseDump(t, data, addr, n)
	})
}

// fuzzBases builds the dumps FuzzPatchedDump mutates.
func fuzzBases() [][]byte {
	var bases [][]byte
	if b := realDumpBytes(); b != nil {
		bases = append(bases, b)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	runs := []Run{{BasePage: 0, PageCount: 2}, {BasePage: 5, PageCount: 1}}
	mem := newSparseMemory(rng, runs)
	h := randomHeader(rng, runs)
	for _, layout := range []Layout{LayoutFull, LayoutBitmap} {
		var out bytes.Buffer
		if err := Write(context.Background(), &out, h, mem, layout); err != nil {
			panic(err)
		}
		bases = append(bases, out.Bytes())
	}
	return append(bases, newSynthTriage(rng).build())
}

func realDumpBytes() []byte {
	p, err := shareddata.Path(realTriage)
	if err != nil {
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	return b
}

// exerciseDump parses data and drives every reader, failing on untyped errors and on a File that claims
// to hold something it cannot read.
func exerciseDump(t *testing.T, data []byte, addr uint64, n uint16) {
	d, err := New(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("untyped error from New: %v", err)
		}
		return
	}
	ctx := context.Background()
	h := d.Header()
	_ = h.Registers()
	_ = h.Time()
	checkRead := func(what string, err error, wantOK bool) {
		t.Helper()
		if err == nil {
			return
		}
		if wantOK {
			t.Fatalf("%s: %v", what, err)
		}
		if !errors.Is(err, ErrNotPresent) && !errors.Is(err, ErrTriagePhysical) &&
			!errors.Is(err, ErrNoVirtual) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("%s: untyped error %v", what, err)
		}
	}
	buf := make([]byte, n)
	checkRead("ReadPhysical(addr)", d.ReadPhysical(ctx, addr, buf), false)
	checkRead("ReadVirtual(addr)", d.ReadVirtual(ctx, addr, buf), false)
	checkRead("ReadVirtual(KDBG)", d.ReadVirtual(ctx, h.KdDebuggerDataBlock, buf), false)
	for i, r := range d.PhysicalRuns() {
		if i >= 64 {
			break
		}
		one := make([]byte, 1)
		checkRead("first byte of a listed run", d.ReadPhysical(ctx, r.BasePage*PageSize, one), true)
		checkRead("last byte of a listed run", d.ReadPhysical(ctx, (r.BasePage+r.PageCount)*PageSize-1, one), true)
	}
	tr, err := d.Triage()
	if err != nil {
		if h.DumpType == TypeTriage {
			t.Fatalf("triage dump without triage data: %v", err)
		}
		return
	}
	for _, b := range []Block{tr.KDBG, tr.Prcb, tr.Process, tr.Thread, tr.CallStack, tr.DataPage} {
		if b.Present() && b.VA != 0 && b.VA+uint64(len(b.Data)) > b.VA {
			got := make([]byte, len(b.Data))
			checkRead("a structure copy at its VA", d.ReadVirtual(ctx, b.VA, got), true)
			// The KDBG copy has the highest precedence, so it always reads back unchanged.
			if b.VA == tr.KDBG.VA && !bytes.Equal(got, b.Data) {
				t.Fatalf("KDBG copy at %#x reads back different bytes", b.VA)
			}
		}
	}
	for i, b := range tr.DataBlocks {
		if i >= 64 {
			break
		}
		checkRead("data block", d.ReadVirtual(ctx, b.VA, make([]byte, min(b.Size, 64))), false)
	}
	for i, drv := range tr.Drivers {
		if i >= 4 {
			break
		}
		if len(drv.Raw) != kldrPrefixSize {
			t.Fatalf("driver %d: raw KLDR prefix is %d bytes", i, len(drv.Raw))
		}
		_ = binary.LittleEndian.Uint64(drv.Raw[kldrDllBase:])
	}
}
