package dump

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func openSynthTriage(t *testing.T, seed uint64) (*synthTriage, *File, []byte) {
	t.Helper()
	s := newSynthTriage(rand.New(rand.NewPCG(seed, 11)))
	raw := s.build()
	d, err := New(bytes.NewReader(raw), int64(len(raw)))
	require.NoError(t, err)
	return s, d, raw
}

func TestSynthTriageCopiesAndVAs(t *testing.T) {
	s, d, _ := openSynthTriage(t, 1)
	tr, err := d.Triage()
	require.NoError(t, err)
	for _, c := range []struct {
		name     string
		b        Block
		va       uint64
		contents []byte
	}{
		{"kdbg", tr.KDBG, s.kdbgVA, s.kdbg},
		{"prcb", tr.Prcb, s.prcbVA, s.prcb},
		{"thread", tr.Thread, s.threadVA, s.thread},
		{"process", tr.Process, s.processVA, s.process},
		{"stack", tr.CallStack, s.stackVA, s.stack},
	} {
		require.Equal(t, c.va, c.b.VA, c.name)
		require.Equal(t, c.contents, c.b.Data, c.name)
		got := make([]byte, len(c.contents))
		require.NoError(t, d.ReadVirtual(context.Background(), c.va, got), c.name)
		require.Equal(t, c.contents, got, c.name)
	}
	require.False(t, tr.DataPage.Present())
	// Triage() hands out copies: changing them does not change the File.
	tr.KDBG.Data[0] ^= 0xFF
	tr2, err := d.Triage()
	require.NoError(t, err)
	require.Equal(t, s.kdbg, tr2.KDBG.Data)
}

func TestSynthTriagePrecedence(t *testing.T) {
	s, d, _ := openSynthTriage(t, 2)
	ctx := context.Background()
	// The KDBG copy wins over the data block that covers the same VA, and the block serves the bytes around it.
	blk := s.blocks[3]
	got := make([]byte, len(blk.data))
	require.NoError(t, d.ReadVirtual(ctx, blk.va, got))
	want := bytes.Clone(blk.data)
	copy(want[s.kdbgVA-blk.va:], s.kdbg)
	require.Equal(t, want, got)

	// Overlapping blocks: the one starting first owns the shared bytes, the later one supplies the rest.
	a, b := s.blocks[1], s.blocks[2]
	got = make([]byte, b.va+uint64(len(b.data))-a.va)
	require.NoError(t, d.ReadVirtual(ctx, a.va, got))
	want = append(bytes.Clone(a.data), b.data[a.va+uint64(len(a.data))-b.va:]...)
	require.Equal(t, want, got)

	// The record pointing past the end of the file is not served.
	require.ErrorIs(t, d.ReadVirtual(ctx, 0xFFFFF80077770000, make([]byte, 1)), ErrNotPresent)
	tr, err := d.Triage()
	require.NoError(t, err)
	require.Len(t, tr.DataBlocks, len(s.blocks)+1, "the raw record list keeps every record")
}

func TestSynthTriageDrivers(t *testing.T) {
	s, d, _ := openSynthTriage(t, 3)
	tr, err := d.Triage()
	require.NoError(t, err)
	require.Len(t, tr.Drivers, len(s.drivers))
	for i, want := range s.drivers {
		got := tr.Drivers[i]
		if want.badNameOffset {
			require.Empty(t, got.Name)
		} else {
			require.Equal(t, want.name, got.Name)
		}
		require.Equal(t, want.base, got.DllBase)
		require.Equal(t, want.size, got.SizeOfImage)
		require.Equal(t, want.stamp, got.TimeDateStamp)
	}
}

func TestSynthTriageNotPresentAndUnsupported(t *testing.T) {
	_, d, _ := openSynthTriage(t, 4)
	ctx := context.Background()
	require.ErrorIs(t, d.ReadVirtual(ctx, 0x1000, make([]byte, 4)), ErrNotPresent)
	require.ErrorIs(t, d.ReadVirtual(ctx, ^uint64(0)-1, make([]byte, 4)), ErrNotPresent)
	require.ErrorIs(t, d.ReadPhysical(ctx, 0, make([]byte, 4)), ErrTriagePhysical)
	require.Empty(t, d.PhysicalRuns())
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, d.ReadVirtual(cctx, 0xFFFFF80000000000, make([]byte, 4)), context.Canceled)
}

func TestSynthTriageWithoutKDBGSizes(t *testing.T) {
	// A KDBG whose Size stops before the Size* fields: the copies fall back to "up to the next piece".
	s := newSynthTriage(rand.New(rand.NewPCG(5, 5)))
	binary.LittleEndian.PutUint32(s.kdbg[0x14:], 0x290) // an XP-sized block
	raw := s.build()
	d, err := New(bytes.NewReader(raw), int64(len(raw)))
	require.NoError(t, err)
	tr, err := d.Triage()
	require.NoError(t, err)
	require.Len(t, tr.Prcb.Data, len(s.prcb), "KPRCB runs up to the process copy")
	require.Equal(t, s.threadVA, tr.Thread.VA, "CurrentThread at the x64 default offset")
	require.Equal(t, s.prcbVA, tr.Prcb.VA, "KiProcessorBlock (0x218) is inside an XP-sized KDBG")
	require.Zero(t, tr.Process.VA, "OffsetKThreadApcProcess is beyond the declared KDBG size")
}

func TestNewRejectsMalformedHeaders(t *testing.T) {
	good, err := (&Header{DumpType: TypeHeaderOnly}).encode()
	require.NoError(t, err)
	for name, mutate := range map[string]func(b []byte) []byte{
		"short":          func(b []byte) []byte { return b[:HeaderSize-1] },
		"signature":      func(b []byte) []byte { b[0] = 'X'; return b },
		"valid-dump":     func(b []byte) []byte { copy(b[4:], "XX64"); return b },
		"32-bit":         func(b []byte) []byte { copy(b[4:], "DUMP"); return b },
		"too many runs":  func(b []byte) []byte { binary.LittleEndian.PutUint32(b[offPhysicalMemoryBlock:], MaxRuns+1); return b },
		"triage no room": func(b []byte) []byte { binary.LittleEndian.PutUint32(b[offDumpType:], uint32(TypeTriage)); return b },
		"bitmap no room": func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[offDumpType:], uint32(TypeBitmap))
			return b
		},
		"full no runs":    func(b []byte) []byte { binary.LittleEndian.PutUint32(b[offDumpType:], uint32(TypeFull)); return b },
		"bitmap bad sig":  func(b []byte) []byte { return bitmapVariant(b, "XDMPDUMP", 8, 1) },
		"bitmap too long": func(b []byte) []byte { return bitmapVariant(b, "FDMPDUMP", 1<<20, 1) },
		"bitmap overlap":  func(b []byte) []byte { return bitmapVariant(b, "FDMPDUMP", 8, 1, 0x2010) },
	} {
		b := mutate(bytes.Clone(good))
		_, err := New(bytes.NewReader(b), int64(len(b)))
		require.Error(t, err, name)
	}
	// 32-bit dumps are recognised and refused as unsupported rather than malformed.
	b := bytes.Clone(good)
	copy(b[4:], "DUMP")
	_, err = New(bytes.NewReader(b), int64(len(b)))
	require.ErrorIs(t, err, ErrUnsupported)
	// A header-only dump opens but has no memory.
	d, err := New(bytes.NewReader(good), int64(len(good)))
	require.NoError(t, err)
	require.ErrorIs(t, d.ReadPhysical(context.Background(), 0, make([]byte, 1)), ErrUnsupported)
}

// bitmapVariant appends a bitmap header with the given signature, bit count and present-page count.
func bitmapVariant(hdr []byte, sig string, pages, present uint64, firstPage ...uint64) []byte {
	binary.LittleEndian.PutUint32(hdr[offDumpType:], uint32(TypeBitmap))
	bh := make([]byte, bmpOffBitmap+8)
	copy(bh, sig)
	fp := uint64(HeaderSize + 0x1000)
	if len(firstPage) > 0 {
		fp = firstPage[0]
	}
	binary.LittleEndian.PutUint64(bh[bmpOffFirstPage:], fp)
	binary.LittleEndian.PutUint64(bh[bmpOffTotalPages:], present)
	binary.LittleEndian.PutUint64(bh[bmpOffPages:], pages)
	bh[bmpOffBitmap] = 1
	return append(hdr, bh...)
}

func TestOpenMissingFile(t *testing.T) {
	_, err := Open(t.TempDir() + "/absent.dmp")
	require.ErrorIs(t, err, os.ErrNotExist)
	// Open on a file that is not a dump closes it and reports the format problem with the path.
	p := t.TempDir() + "/garbage.dmp"
	require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte("x"), HeaderSize), 0o600))
	_, err = Open(p)
	require.ErrorIs(t, err, ErrFormat)
	require.ErrorContains(t, err, p)
}
