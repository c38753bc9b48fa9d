package dump

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
)

// BenchmarkReadPhysical compares page reads through a bitmap dump with the same reads straight from the
// underlying bytes (the raw baseline, reported as ratio = dump ns/op ÷ raw ns/op in the same run).
func BenchmarkReadPhysical(b *testing.B) {
	var runs []Run
	for i := range uint64(32) {
		runs = append(runs, Run{BasePage: i * 64, PageCount: 48}) // 32 runs with holes between them
	}
	rng := rand.New(rand.NewPCG(1, 1))
	mem := newSparseMemory(rng, runs)
	raw := writeDump(b, randomHeader(rng, runs), mem, LayoutBitmap)
	d, err := New(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		b.Fatal(err)
	}
	// Pick page-sized reads at random present PAs and their file offsets.
	type probe struct {
		pa  uint64
		off int64
	}
	var probes []probe
	for _, r := range d.phys {
		for p := range r.pageCount {
			probes = append(probes, probe{(r.firstPage + p) * PageSize, r.fileOff + int64(p)*PageSize})
		}
	}
	rng.Shuffle(len(probes), func(i, j int) { probes[i], probes[j] = probes[j], probes[i] })
	reader := bytes.NewReader(raw)
	buf := make([]byte, PageSize)
	ctx := context.Background()

	var rawNs, dumpNs float64
	b.Run("raw", func(b *testing.B) {
		b.SetBytes(PageSize)
		for i := 0; b.Loop(); i++ {
			if _, err := reader.ReadAt(buf, probes[i%len(probes)].off); err != nil {
				b.Fatal(err)
			}
		}
		rawNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	b.Run("dump", func(b *testing.B) {
		b.SetBytes(PageSize)
		for i := 0; b.Loop(); i++ {
			if err := d.ReadPhysical(ctx, probes[i%len(probes)].pa, buf); err != nil {
				b.Fatal(err)
			}
		}
		dumpNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		if rawNs > 0 {
			b.ReportMetric(dumpNs/rawNs, "x-raw")
		}
	})
}

// BenchmarkReadVirtualTriage measures 8-byte pointer reads through a triage dump's data blocks against
// the same reads from the bytes at the blocks' file offsets.
func BenchmarkReadVirtualTriage(b *testing.B) {
	s := newSynthTriage(rand.New(rand.NewPCG(2, 2)))
	for i := range 2000 { // a real triage dump has ~1800 blocks
		s.blocks = append(s.blocks, synthBlock{va: 0xFFFFE00000000000 + uint64(i)*0x2000, data: make([]byte, 0x100)})
	}
	raw := s.build()
	d, err := New(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		b.Fatal(err)
	}
	segs := d.virt.blocks
	reader := bytes.NewReader(raw)
	buf := make([]byte, 8)
	ctx := context.Background()
	var rawNs float64
	b.Run("raw", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := reader.ReadAt(buf, segs[(i*7919)%len(segs)].fileOff); err != nil {
				b.Fatal(err)
			}
		}
		rawNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	b.Run("dump", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := d.ReadVirtual(ctx, segs[(i*7919)%len(segs)].va, buf); err != nil {
				b.Fatal(err)
			}
		}
		if rawNs > 0 {
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/rawNs, "x-raw")
		}
	})
}
