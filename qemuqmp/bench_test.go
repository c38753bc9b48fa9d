package qemuqmp_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/qemuqmp/qemutest"
)

const benchBase = 0x1000000 // 16 MiB into RAM, clear of the guest image

// rawSerialNsPerByte times the baseline every figure is compared with: raw gdbstub m packets of 2048 bytes,
// one outstanding at a time.
func rawSerialNsPerByte(b *testing.B, ctx context.Context, m *qemuqmp.Machine, total int) float64 {
	b.Helper()
	g := m.GDB()
	_, err := g.Request(ctx, "Qqemu.PhyMemMode:1")
	require.NoError(b, err)
	// The client caches PhyMemMode; put it back into a known state through the normal path afterwards.
	defer func() { _ = g.ReadPhysical(ctx, 0, make([]byte, 1)) }()
	start := time.Now()
	for off := 0; off < total; off += 2048 {
		r, err := g.Request(ctx, fmt.Sprintf("m%x,800", benchBase+off))
		require.NoError(b, err)
		require.Len(b, r, 4096)
	}
	return float64(time.Since(start).Nanoseconds()) / float64(total)
}

func startBench(b *testing.B, opt qemutest.Options) (*qemuqmp.Machine, *qemutest.QEMU, context.Context) {
	q := qemutest.Start(b, opt)
	m := q.Connect(b, qemuqmp.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	return m, q, ctx
}

// BenchmarkBulkRead reads 4 MiB per op through each backend; x_vs_gdb_m is the speed-up over serial raw m.
func BenchmarkBulkRead(b *testing.B) {
	m, _, ctx := startBench(b, qemutest.Options{SharedRAM: true})
	const size = 4 << 20
	gdb, pmem, shm := m.Backends()
	for _, bc := range []struct {
		name string
		read func([]byte) error
	}{
		{"gdb-m-serial", nil}, // the baseline itself
		{"gdb-pipelined", func(buf []byte) error { return gdb.ReadPhysical(ctx, benchBase, buf) }},
		{"pmemsave", func(buf []byte) error { return pmem.ReadPhysical(ctx, benchBase, buf) }},
		{"shared", func(buf []byte) error { return shm.ReadPhysical(ctx, benchBase, buf) }},
		{"machine-auto", func(buf []byte) error { return m.ReadPhysical(ctx, benchBase, buf) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			base := rawSerialNsPerByte(b, ctx, m, 1<<20)
			buf := make([]byte, size)
			b.SetBytes(size)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if bc.read == nil {
					rawSerialNsPerByte(b, ctx, m, size)
					continue
				}
				require.NoError(b, bc.read(buf))
			}
			el := time.Since(start)
			b.StopTimer()
			nsPerByte := float64(el.Nanoseconds()) / float64(b.N*size)
			b.ReportMetric(base/nsPerByte, "x_vs_gdb_m")
		})
	}
}

// BenchmarkLatency times single operations; x_vs_m8 is the cost relative to one raw 8-byte m in the same run.
func BenchmarkLatency(b *testing.B) {
	m, q, ctx := startBench(b, qemutest.Options{})
	g := q.Guest
	bootToMainLoopB(b, ctx, m, g)
	tick := qemuqmp.Breakpoint{Kind: qemuqmp.Software, Addr: g.KVA(b, "tick")}
	gdb := m.GDB()
	// Physical mode throughout, so the raw baseline and the Machine's reads cost the same stub work.
	require.NoError(b, gdb.ReadPhysical(ctx, 0, make([]byte, 1)))
	m8pkt := fmt.Sprintf("m%x,8", g.Phys(b, "counter"))
	m8 := func() {
		_, err := gdb.Request(ctx, m8pkt)
		require.NoError(b, err)
	}
	baseline := func() float64 {
		for range 50 { // warm up
			m8()
		}
		start := time.Now()
		for range 200 {
			m8()
		}
		return float64(time.Since(start).Nanoseconds()) / 200
	}
	cpu0 := gdb.Threads()[0]
	ops := []struct {
		name  string
		setup func()
		op    func()
	}{
		{"m8-raw", nil, m8},
		{"p-rip", nil, func() { _, err := gdb.ReadRegister(ctx, cpu0, "rip"); require.NoError(b, err) }},
		{"g", nil, func() { _, err := gdb.ReadAllRegisters(ctx, cpu0); require.NoError(b, err) }},
		{"registers-cached-hmp", nil, func() { _, err := m.Registers(ctx, 0); require.NoError(b, err) }},
		{"registers-after-step", nil, func() {
			_, err := m.Step(ctx, 0)
			require.NoError(b, err)
			_, err = m.Registers(ctx, 0)
			require.NoError(b, err)
		}},
		{"read-phys-8", nil, func() { require.NoError(b, m.ReadPhysical(ctx, g.Phys(b, "counter"), make([]byte, 8))) }},
		{"qmp-status", nil, func() { _, err := m.QMP().Status(ctx); require.NoError(b, err) }},
		{"bp-cycle", func() { require.NoError(b, m.AddBreakpoint(ctx, tick)) }, func() {
			require.NoError(b, m.Continue(ctx))
			ev := <-m.Events()
			require.Equal(b, qemuqmp.StopBreakpoint, ev.Reason)
		}},
		{"step", func() { require.NoError(b, m.RemoveBreakpoint(ctx, tick)) }, func() {
			_, err := m.Step(ctx, 0)
			require.NoError(b, err)
		}},
	}
	for _, o := range ops {
		b.Run(o.name, func(b *testing.B) {
			if o.setup != nil {
				o.setup()
			}
			base := baseline()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				o.op()
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(el.Nanoseconds())/float64(b.N)/base, "x_vs_m8")
		})
	}
}

func bootToMainLoopB(b *testing.B, ctx context.Context, m *qemuqmp.Machine, g *qemutest.Guest) {
	bp := qemuqmp.Breakpoint{Kind: qemuqmp.Software, Addr: g.KVA(b, "tick")}
	require.NoError(b, m.AddBreakpoint(ctx, bp))
	require.NoError(b, m.Continue(ctx))
	ev := <-m.Events()
	require.Equal(b, qemuqmp.StopBreakpoint, ev.Reason)
	require.NoError(b, m.RemoveBreakpoint(ctx, bp))
}
