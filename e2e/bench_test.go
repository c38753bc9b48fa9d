package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/kdstub/kdstub/kdproto"
)

// Benchmarks measure the KD path (host session → KD serial on a unix socket → server → target → QEMU) and,
// in the same run, the raw QEMU operation it stands for, and report both and their ratio.

func benchCtx(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// BenchmarkAttach: break-in, GetVersion, the KDBG (header and body) and the full CONTEXT, on a running
// guest, versus the raw equivalent on the machine: stop, registers, the same bytes read through the gdbstub.
func BenchmarkAttach(b *testing.B) {
	ctx := benchCtx(b)
	s := startStub(b, 1)
	d := s.attachSerial(b, ctx, "unix")
	kdbg, size := uint64(s.g.Manifest.KDBG.Address), int(s.g.Manifest.KDBG.Size)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		d.breakIn(b, ctx)
		d.request(b, ctx, kdproto.APIGetVersion, nil, nil, 0)
		d.read(b, ctx, kdbg, size)
		d.context(b, ctx, 0)
		d.cont(b, ctx, false, 0x400)
	}
	kd := time.Since(start)
	b.StopTimer()
	buf := make([]byte, size)
	start = time.Now()
	for i := 0; i < b.N; i++ {
		if err := s.m.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := s.m.Registers(ctx, 0); err != nil {
			b.Fatal(err)
		}
		if _, err := s.m.ReadVirtual(ctx, 0, kdbg, buf); err != nil {
			b.Fatal(err)
		}
		if err := s.m.Continue(ctx); err != nil {
			b.Fatal(err)
		}
	}
	raw := time.Since(start)
	b.ReportMetric(float64(kd.Microseconds())/float64(b.N), "kd-µs/attach")
	b.ReportMetric(float64(raw.Microseconds())/float64(b.N), "raw-µs/attach")
	b.ReportMetric(float64(kd)/float64(raw), "kd/raw")
}

// BenchmarkKDRead: KD ReadVirtualMemory of 3944-byte chunks of the kernel image versus raw gdbstub virtual
// reads of the same chunks.
func BenchmarkKDRead(b *testing.B) {
	ctx := benchCtx(b)
	s := startStub(b, 1)
	d := s.attachSerial(b, ctx, "unix")
	d.breakIn(b, ctx)
	base, span := uint64(s.g.Manifest.KernelBase), uint64(s.g.Manifest.KernelSize)
	const chunk = kdproto.MaxManipulateData
	b.SetBytes(chunk)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		va := base + uint64(i*chunk)%(span-chunk)
		r := d.request(b, ctx, kdproto.APIReadVirtualMemory, &kdproto.ReadMemory64{TargetBaseAddress: va, TransferCount: chunk}, nil, 0)
		if r.ReturnStatus != kdproto.StatusSuccess {
			b.Fatalf("read at %#x: %#x", va, r.ReturnStatus)
		}
	}
	kd := time.Since(start)
	b.StopTimer()
	buf := make([]byte, chunk)
	start = time.Now()
	for i := 0; i < b.N; i++ {
		va := base + uint64(i*chunk)%(span-chunk)
		if _, err := s.m.GDB().ReadMemory(ctx, s.m.GDB().Threads()[0], va, buf, false); err != nil {
			b.Fatal(err)
		}
	}
	raw := time.Since(start)
	mb := float64(b.N*chunk) / (1 << 20)
	b.ReportMetric(mb/kd.Seconds(), "kd-MiB/s")
	b.ReportMetric(mb/raw.Seconds(), "raw-gdbstub-MiB/s")
	b.ReportMetric(float64(raw)/float64(kd), "kd-throughput/raw")
	d.cont(b, ctx, false, 0x400)
}

// BenchmarkStep: KD single step (Continue2 with TraceFlag → STATE_CHANGE64) versus a raw machine step.
func BenchmarkStep(b *testing.B) {
	ctx := benchCtx(b)
	s := startStub(b, 1)
	d := s.attachSerial(b, ctx, "unix")
	d.breakIn(b, ctx)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		d.cont(b, ctx, true, 0x400)
		d.wait(b, ctx)
	}
	kd := time.Since(start)
	b.StopTimer()
	start = time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := s.m.Step(ctx, 0); err != nil {
			b.Fatal(err)
		}
	}
	raw := time.Since(start)
	start = time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := s.m.Registers(ctx, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "raw-µs/registers")
	b.ReportMetric(float64(kd.Microseconds())/float64(b.N), "kd-µs/step")
	b.ReportMetric(float64(raw.Microseconds())/float64(b.N), "raw-µs/step")
	b.ReportMetric(float64(kd)/float64(raw), "kd/raw")
	d.cont(b, ctx, false, 0x400)
}
