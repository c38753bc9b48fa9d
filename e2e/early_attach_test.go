package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/qemuqmp/qemutest"
	"github.com/kdstub/kdstub/windows/target"
	"github.com/kdstub/kdstub/windows/target/qemumachine"
)

// TestBreakInBeforeKernelWaitsForKernel attaches to a guest still paused at its reset vector (paging off, no
// kernel yet). A debug-mode kernel answers a break-in only once KD is up, so the stub must let the guest boot
// and report the break-in from inside the running kernel, after which the attach (GetVersion) succeeds.
func TestBreakInBeforeKernelWaitsForKernel(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	g := guest(t, 1)
	man := g.Manifest
	q := qemutest.Start(t, qemutest.Options{SMP: 1, Kernel: g.ELF, MemoryMB: int(g.RAMSize >> 20), SharedRAM: true})
	m := q.Connect(t, qemuqmp.Config{Logger: testLogger()})
	require.False(t, m.Running(), "QEMU started paused")
	r, err := m.Registers(ctx, 0)
	require.NoError(t, err)
	require.Zero(t, r.CR0&amd64.CR0PG, "the guest has not enabled paging yet: the kernel cannot be discovered")

	tg, err := target.New(ctx, target.Config{Machine: qemumachine.New(m), Discoverer: target.LiveDiscoverer{Phys: m, CPUs: m}, Logger: testLogger()})
	require.NoError(t, err)
	s := &stub{g: g, q: q, m: m, target: tg, srv: &kdproto.Server{Target: tg, Logger: testLogger()}}
	d := s.attachSerial(t, ctx, "unix")

	sc := d.breakIn(t, ctx)
	require.Equal(t, kdproto.StatusBreakpoint, code(sc))
	require.GreaterOrEqual(t, sc.ProgramCounter, uint64(man.KernelBase))
	require.Less(t, sc.ProgramCounter, uint64(man.KernelBase+man.KernelSize), "stopped inside ntoskrnl, not the boot stub: %#x", sc.ProgramCounter)
	require.Equal(t, uint16(kdproto.ReportIncludesSegs|kdproto.ReportStandardCS), sc.ControlReport.ReportFlags)

	v := d.request(t, ctx, kdproto.APIGetVersion, nil, nil, 0xFFFF)
	require.Equal(t, kdproto.StatusSuccess, v.ReturnStatus, "GetVersion after the held break-in")
	gv := v.U.(*kdproto.GetVersion64)
	require.Equal(t, uint16(man.Build), gv.MinorVersion)
	require.Equal(t, uint64(man.KernelBase), gv.KernBase)
	require.Equal(t, uint64(man.Symbols["PsLoadedModuleList"]), gv.PsLoadedModuleList)
	require.Equal(t, uint64(man.Symbols["KdpDebuggerDataListHead"]), gv.DebuggerDataList)
	require.Equal(t, sc.ProgramCounter, d.context(t, ctx, 0).Rip, "the reported stop is where the guest is")

	// The session goes on as usual: continue, break in again.
	d.cont(t, ctx, false, 0x400)
	sc2 := d.breakIn(t, ctx)
	require.Equal(t, kdproto.StatusBreakpoint, code(sc2))
	require.GreaterOrEqual(t, sc2.ProgramCounter, uint64(man.KernelBase))
	require.Less(t, sc2.ProgramCounter, uint64(man.KernelBase+man.KernelSize))
	d.cont(t, ctx, false, 0x400)
}
