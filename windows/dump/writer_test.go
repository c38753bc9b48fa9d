package dump

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// holeyRuns is a physical map with holes: low memory, a gap, two adjacent runs, and a run above 4 GiB.
var holeyRuns = []Run{
	{BasePage: 0, PageCount: 3},
	{BasePage: 5, PageCount: 4},
	{BasePage: 9, PageCount: 2}, // adjacent to the previous run
	{BasePage: 0x40, PageCount: 1},
	{BasePage: 0x100000, PageCount: 3}, // 4 GiB
}

func TestHeaderEncodeDecodeRoundTrip(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		h := randomHeader(rng, holeyRuns)
		h.DumpType = DumpType(rng.Uint32N(11))
		b, err := h.encode()
		require.NoError(t, err)
		require.Len(t, b, HeaderSize)
		got, err := decodeHeader(b)
		require.NoError(t, err)
		require.Equal(t, h, got, "seed %d", seed)
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		layout Layout
		typ    DumpType
		bitmap string
	}{
		{"full", LayoutFull, TypeFull, ""},
		{"bitmap", LayoutBitmap, TypeBitmap, "FDMP"},
		{"kernel-bitmap", LayoutKernelBitmap, TypeBitmap, "SDMP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(42, uint64(tc.layout)))
			mem := newSparseMemory(rng, holeyRuns)
			h := randomHeader(rng, holeyRuns)
			raw := writeDump(t, h, mem, tc.layout)
			d, err := New(bytes.NewReader(raw), int64(len(raw)))
			require.NoError(t, err)

			got := d.Header()
			require.Equal(t, tc.typ, got.DumpType)
			require.Equal(t, uint64(len(raw)), got.RequiredDumpSpace)
			want := *h
			want.DumpType, want.RequiredDumpSpace = tc.typ, uint64(len(raw))
			require.Equal(t, &want, got, "every header field survives the round trip")
			require.True(t, d.HasPhysical())
			if tc.bitmap != "" {
				bh := d.Bitmap()
				require.NotNil(t, bh)
				require.Equal(t, tc.bitmap, bh.Signature)
				require.Equal(t, h.NumberOfPages, bh.TotalPresentPages)
				require.Equal(t, uint64(0x100003), bh.Pages)
				require.Zero(t, bh.FirstPage%PageSize)
			} else {
				require.Nil(t, d.Bitmap())
			}

			// Every present page reads back byte-identical, page by page and in one read per run.
			for _, r := range holeyRuns {
				for p := r.BasePage; p < r.BasePage+r.PageCount; p++ {
					buf := make([]byte, PageSize)
					require.NoError(t, d.ReadPhysical(ctx, p*PageSize, buf))
					require.Equal(t, mem.pages[p], buf, "page %#x", p)
				}
				whole := make([]byte, r.PageCount*PageSize)
				require.NoError(t, d.ReadPhysical(ctx, r.BasePage*PageSize, whole))
				want := make([]byte, len(whole))
				require.NoError(t, mem.ReadPhysical(ctx, r.BasePage*PageSize, want))
				require.Equal(t, want, whole)
			}
			// A read spanning the two adjacent runs, unaligned at both ends.
			span := make([]byte, 4*PageSize)
			require.NoError(t, d.ReadPhysical(ctx, 6*PageSize+0x123, span))
			want2 := make([]byte, len(span))
			require.NoError(t, mem.ReadPhysical(ctx, 6*PageSize+0x123, want2))
			require.Equal(t, want2, span)

			// Holes: a page in a gap, a read running off the end of a run, and past all memory.
			for _, c := range []struct{ pa, n, missing uint64 }{
				{3 * PageSize, 8, 3 * PageSize},
				{2*PageSize + 0xFF0, 0x20, 3 * PageSize},
				{10*PageSize + 0x800, PageSize, 11 * PageSize},
				{0x41 * PageSize, 1, 0x41 * PageSize},
				{0x100003 * PageSize, 16, 0x100003 * PageSize},
				{^uint64(0) - 3, 8, ^uint64(0) - 3},
			} {
				err := d.ReadPhysical(ctx, c.pa, make([]byte, c.n))
				require.ErrorIs(t, err, ErrNotPresent, "PA %#x", c.pa)
				var np *NotPresentError
				require.True(t, errors.As(err, &np))
				require.Equal(t, c.missing, np.Addr, "PA %#x", c.pa)
				require.False(t, np.Virtual)
			}
			require.ErrorIs(t, d.ReadVirtual(ctx, 0x1000, make([]byte, 8)), ErrNoVirtual)
			_, err = d.Triage()
			require.ErrorIs(t, err, ErrUnsupported)
		})
	}
}

func TestWriteFromDumpIsIdentical(t *testing.T) {
	// A File is itself a PhysicalMemory: re-writing a full dump as a full dump reproduces it byte for byte,
	// and converting it to a bitmap dump keeps every page.
	rng := rand.New(rand.NewPCG(7, 7))
	mem := newSparseMemory(rng, holeyRuns)
	h := randomHeader(rng, holeyRuns)
	full := writeDump(t, h, mem, LayoutFull)
	d, err := New(bytes.NewReader(full), int64(len(full)))
	require.NoError(t, err)
	again := writeDump(t, d.Header(), d, LayoutFull)
	require.Equal(t, full, again)

	bm := writeDump(t, d.Header(), d, LayoutBitmap)
	b, err := New(bytes.NewReader(bm), int64(len(bm)))
	require.NoError(t, err)
	require.Equal(t, mergeRuns(holeyRuns), b.PhysicalRuns())
	for p, want := range mem.pages {
		got := make([]byte, PageSize)
		require.NoError(t, b.ReadPhysical(context.Background(), p*PageSize, got))
		require.Equal(t, want, got)
	}
}

// mergeRuns joins adjacent runs, as a bitmap cannot tell them apart.
func mergeRuns(runs []Run) []Run {
	var out []Run
	for _, r := range runs {
		if n := len(out); n > 0 && out[n-1].BasePage+out[n-1].PageCount == r.BasePage {
			out[n-1].PageCount += r.PageCount
			continue
		}
		out = append(out, r)
	}
	return out
}

func TestTruncatedDumpKeepsLeadingPages(t *testing.T) {
	ctx := context.Background()
	for _, layout := range []Layout{LayoutFull, LayoutBitmap} {
		rng := rand.New(rand.NewPCG(3, uint64(layout)))
		mem := newSparseMemory(rng, holeyRuns)
		raw := writeDump(t, randomHeader(rng, holeyRuns), mem, layout)
		// Drop the last 1.5 pages: 0x100002 is gone and 0x100001 loses its tail.
		cut := raw[:len(raw)-PageSize-PageSize/2]
		d, err := New(bytes.NewReader(cut), int64(len(cut)))
		require.NoError(t, err)
		buf := make([]byte, PageSize)
		require.NoError(t, d.ReadPhysical(ctx, 0x100000*PageSize, buf))
		require.Equal(t, mem.pages[0x100000], buf)
		require.ErrorIs(t, d.ReadPhysical(ctx, 0x100001*PageSize, buf), ErrNotPresent)
		require.ErrorIs(t, d.ReadPhysical(ctx, 0x100002*PageSize, buf), ErrNotPresent)
		require.NoError(t, d.ReadPhysical(ctx, 0x40*PageSize, buf))
		require.Equal(t, mem.pages[0x40], buf)
	}
}

func TestWriteManyRuns(t *testing.T) {
	// More runs than the header descriptor holds: full layout refuses, bitmap layout drops the descriptor.
	var runs []Run
	for i := range uint64(MaxRuns + 5) {
		runs = append(runs, Run{BasePage: 2 * i, PageCount: 1})
	}
	rng := rand.New(rand.NewPCG(9, 9))
	mem := newSparseMemory(rng, runs)
	h := randomHeader(rng, runs)
	err := Write(context.Background(), &bytes.Buffer{}, h, mem, LayoutFull)
	require.ErrorContains(t, err, "at most")

	raw := writeDump(t, h, mem, LayoutBitmap)
	d, err := New(bytes.NewReader(raw), int64(len(raw)))
	require.NoError(t, err)
	require.False(t, d.Header().PhysicalMemoryValid)
	require.Equal(t, runs, d.PhysicalRuns())
	for _, r := range runs {
		buf := make([]byte, PageSize)
		require.NoError(t, d.ReadPhysical(context.Background(), r.BasePage*PageSize, buf))
		require.Equal(t, mem.pages[r.BasePage], buf)
		require.ErrorIs(t, d.ReadPhysical(context.Background(), (r.BasePage+1)*PageSize, buf), ErrNotPresent)
	}
}

func TestWriteRejectsBadInput(t *testing.T) {
	mem := newSparseMemory(rand.New(rand.NewPCG(1, 1)), []Run{{BasePage: 1, PageCount: 1}})
	for name, runs := range map[string][]Run{
		"overlap":    {{BasePage: 4, PageCount: 4}, {BasePage: 6, PageCount: 1}},
		"descending": {{BasePage: 8, PageCount: 1}, {BasePage: 2, PageCount: 1}},
		"overflow":   {{BasePage: 1 << 60, PageCount: 1}},
	} {
		err := Write(context.Background(), &bytes.Buffer{}, &Header{Runs: runs}, mem, LayoutFull)
		require.Error(t, err, name)
	}
	// A source error aborts the write and names the address.
	err := Write(context.Background(), &bytes.Buffer{}, &Header{Runs: []Run{{BasePage: 1, PageCount: 2}}}, mem, LayoutFull)
	require.ErrorIs(t, err, ErrNotPresent)
	require.ErrorContains(t, err, "PA 0x1000")
	// A cancelled context stops the write.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = Write(ctx, &bytes.Buffer{}, &Header{Runs: []Run{{BasePage: 1, PageCount: 1}}}, mem, LayoutFull)
	require.ErrorIs(t, err, context.Canceled)
	require.Error(t, Write(context.Background(), &bytes.Buffer{}, &Header{}, mem, Layout(99)))
}

func TestReadPhysicalHonoursContext(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	mem := newSparseMemory(rng, holeyRuns)
	raw := writeDump(t, randomHeader(rng, holeyRuns), mem, LayoutFull)
	d, err := New(bytes.NewReader(raw), int64(len(raw)))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, d.ReadPhysical(ctx, 0, make([]byte, 8)), context.Canceled)
}

func TestHeaderTime(t *testing.T) {
	h := &Header{SystemTime: 116444736000000000} // the Unix epoch as a FILETIME
	require.Equal(t, time.Unix(0, 0).UTC(), h.Time())
	h.SystemTime = 116444736000000000 + 15*10_000_000 + 5
	require.Equal(t, time.Unix(15, 500).UTC(), h.Time())
	h.SystemTime = 0
	require.True(t, h.Time().IsZero())
}

func TestOtherBitmapDumpTypesRead(t *testing.T) {
	// Kernel (2) and live kernel (6) dumps share the bitmap layout: the same file with either DumpType reads
	// the same pages.
	rng := rand.New(rand.NewPCG(8, 8))
	mem := newSparseMemory(rng, holeyRuns)
	raw := writeDump(t, randomHeader(rng, holeyRuns), mem, LayoutKernelBitmap)
	for _, typ := range []DumpType{TypeKernel, TypeLiveKernel} {
		b := bytes.Clone(raw)
		binary.LittleEndian.PutUint32(b[offDumpType:], uint32(typ))
		d, err := New(bytes.NewReader(b), int64(len(b)))
		require.NoError(t, err, typ.String())
		require.Equal(t, typ, d.Header().DumpType)
		buf := make([]byte, PageSize)
		require.NoError(t, d.ReadPhysical(context.Background(), 0x100002*PageSize, buf))
		require.Equal(t, mem.pages[0x100002], buf)
		require.ErrorIs(t, d.ReadPhysical(context.Background(), 4*PageSize, buf), ErrNotPresent)
	}
}
