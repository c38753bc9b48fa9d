package qemuqmp_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/qemuqmp/qemutest"
	"github.com/kdstub/kdstub/qemuqmp/ram"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// bootToMainLoop runs the guest until CPU 0 reaches tick once and leaves that breakpoint in place.
func bootToMainLoop(t *testing.T, ctx context.Context, m *qemuqmp.Machine, g *qemutest.Guest) qemuqmp.StopEvent {
	t.Helper()
	bp := qemuqmp.Breakpoint{Kind: qemuqmp.Software, Addr: g.KVA(t, "tick")}
	require.NoError(t, m.AddBreakpoint(ctx, bp))
	require.NoError(t, m.Continue(ctx))
	ev := nextStop(t, ctx, m)
	require.Equal(t, qemuqmp.StopBreakpoint, ev.Reason, "stop: %+v", ev)
	require.Equal(t, g.KVA(t, "tick"), ev.PC)
	return ev
}

func nextStop(t *testing.T, ctx context.Context, m *qemuqmp.Machine) qemuqmp.StopEvent {
	t.Helper()
	for {
		select {
		case ev := <-m.Events():
			if ev.Reason == qemuqmp.StopReset || ev.Reason == qemuqmp.StopShutdown {
				continue
			}
			return ev
		case <-ctx.Done():
			t.Fatalf("no stop event: %v", ctx.Err())
		}
	}
}

func readU64(t *testing.T, ctx context.Context, m *qemuqmp.Machine, pa uint64) uint64 {
	t.Helper()
	var b [8]byte
	require.NoError(t, m.ReadPhysical(ctx, pa, b[:]))
	return binary.LittleEndian.Uint64(b[:])
}

func TestTinyGuestRegisters(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 30*time.Second)
	g := q.Guest
	bootToMainLoop(t, ctx, m, g)

	r, err := m.Registers(ctx, 0)
	require.NoError(t, err)
	require.True(t, r.Have.Has(amd64.HaveGPR|amd64.HaveBases|amd64.HaveControl|amd64.HaveDescriptors|amd64.HaveDebug|amd64.HaveFloat))
	require.Equal(t, g.KVA(t, "tick"), r.RIP)
	require.Equal(t, uint16(0x08), r.CS)
	require.Equal(t, uint16(0x10), r.SS)
	require.Equal(t, g.KVA(t, "kpcr"), r.GSBase, "GS base is the KPCR marker object")
	require.EqualValues(t, qemutest.GuestKernelGSBase, r.KernelGSBase)
	require.EqualValues(t, qemutest.GuestFSBase, r.FSBase)
	require.Equal(t, g.Phys(t, "pml4"), r.CR3)
	require.NotZero(t, r.CR0&amd64.CR0PG)
	require.NotZero(t, r.CR4&amd64.CR4PAE)
	require.EqualValues(t, 0xd01, r.EFER, "SCE|LME|LMA|NXE")
	require.Equal(t, 4, r.PagingLevels())
	require.Equal(t, g.KVA(t, "idt"), r.IDTRBase)
	require.EqualValues(t, 32*16-1, r.IDTRLimit)
	require.Equal(t, g.KVA(t, "gdt"), r.GDTRBase)
	require.EqualValues(t, 23, r.GDTRLimit)
	require.EqualValues(t, 0x400, r.DR7)
	require.EqualValues(t, 0x1f80, r.MXCSR)
	require.EqualValues(t, 0x37f, r.FCW)

	marker := make([]byte, 8)
	require.NoError(t, m.ReadPhysical(ctx, g.Phys(t, "kpcr"), marker))
	require.Equal(t, qemutest.GuestKPCRMarker, string(marker))
	n, err := m.ReadVirtual(ctx, 0, r.GSBase, marker)
	require.NoError(t, err)
	require.Equal(t, 8, n)
	require.Equal(t, qemutest.GuestKPCRMarker, string(marker))

	// Virtual writes land at the physical alias; an unmapped VA is an error with nothing written.
	n, err = m.WriteVirtual(ctx, 0, r.GSBase+16, []byte("virt"))
	require.NoError(t, err)
	require.Equal(t, 4, n)
	got := make([]byte, 4)
	require.NoError(t, m.ReadPhysical(ctx, g.Phys(t, "kpcr")+16, got))
	require.Equal(t, "virt", string(got))
	n, err = m.ReadVirtual(ctx, 0, 0x40000000, got)
	require.Error(t, err)
	require.Zero(t, n)
}

func TestBreakpointStepOverAndRehit(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 30*time.Second)
	g := q.Guest
	bootToMainLoop(t, ctx, m, g)
	c1 := readU64(t, ctx, m, g.Phys(t, "tick_count"))

	// QEMU would re-report the breakpoint without executing; Continue must step over it.
	require.NoError(t, m.Continue(ctx))
	ev := nextStop(t, ctx, m)
	require.Equal(t, qemuqmp.StopBreakpoint, ev.Reason)
	require.Equal(t, g.KVA(t, "tick"), ev.PC)
	c2 := readU64(t, ctx, m, g.Phys(t, "tick_count"))
	require.Equal(t, c1+1, c2, "exactly one tick ran between the two hits")

	// Step from the breakpoint: executes the breakpointed instruction.
	st, err := m.Step(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, qemuqmp.StopStep, st.Reason)
	require.NotEqual(t, g.KVA(t, "tick"), st.PC)
	require.Equal(t, c2+1, readU64(t, ctx, m, g.Phys(t, "tick_count")), "the step executed tick's add")

	require.NoError(t, m.RemoveBreakpoint(ctx, qemuqmp.Breakpoint{Kind: qemuqmp.Software, Addr: g.KVA(t, "tick")}))
	require.NoError(t, m.Continue(ctx))
	require.Eventually(t, func() bool { return readU64(t, ctx, m, g.Phys(t, "tick_count")) > c2+100 }, 10*time.Second, 5*time.Millisecond,
		"without the breakpoint the loop runs freely")
	ev, err = m.Halt(ctx)
	require.NoError(t, err)
	require.Equal(t, qemuqmp.StopInterrupted, ev.Reason)
	require.Equal(t, 0, ev.CPU)
}

func TestWatchpointReportsAddress(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 30*time.Second)
	g := q.Guest
	bootToMainLoop(t, ctx, m, g)
	require.NoError(t, m.RemoveBreakpoint(ctx, qemuqmp.Breakpoint{Kind: qemuqmp.Software, Addr: g.KVA(t, "tick")}))
	w := qemuqmp.Breakpoint{Kind: qemuqmp.WatchWrite, Addr: g.KVA(t, "watched"), Len: 8}
	require.NoError(t, m.AddBreakpoint(ctx, w))
	require.NoError(t, m.Continue(ctx))
	ev := nextStop(t, ctx, m)
	require.Equal(t, qemuqmp.StopWatchpoint, ev.Reason, "%+v", ev)
	require.Equal(t, qemuqmp.WatchWrite, ev.WatchKind)
	require.Equal(t, g.KVA(t, "watched"), ev.WatchAddr)
	require.Equal(t, 0, ev.CPU)
	require.EqualValues(t, 1, readU64(t, ctx, m, g.Phys(t, "watched")), "reported after the write")
}

func TestMemoryBackendsAgreeAndWritesRoundTrip(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{SharedRAM: true})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 60*time.Second)
	g := q.Guest
	bootToMainLoop(t, ctx, m, g)

	gdb, pmem, shm := m.Backends()
	require.NotNil(t, pmem)
	require.NotNil(t, shm)
	const base, size = 0x100000, 0x20000 // the guest image and its page tables
	want := make([]byte, size)
	require.NoError(t, gdb.ReadPhysical(ctx, base, want))
	require.Equal(t, []byte("KPCRKPCR"), want[g.Phys(t, "kpcr")-base:][:8])
	for name, b := range map[string]interface {
		ReadPhysical(context.Context, uint64, []byte) error
	}{"pmemsave": pmem, "shared": shm, "machine": m} {
		got := make([]byte, size)
		require.NoError(t, b.ReadPhysical(ctx, base, got), name)
		require.True(t, bytes.Equal(want, got), "%s differs from the gdbstub", name)
	}

	// Writes through every writable path are seen by every reader.
	pa := g.Phys(t, "tick_count") + 16
	for i, w := range []interface {
		WritePhysical(context.Context, uint64, []byte) error
	}{gdb, shm, m} {
		val := []byte{byte(i + 1), 0xAA, 0x55, byte(i), 1, 2, 3, 4}
		require.NoError(t, w.WritePhysical(ctx, pa, val))
		for _, r := range []interface {
			ReadPhysical(context.Context, uint64, []byte) error
		}{gdb, pmem, shm} {
			got := make([]byte, 8)
			require.NoError(t, r.ReadPhysical(ctx, pa, got))
			require.Equal(t, val, got)
		}
	}

	// Outside RAM the shared file refuses and the machine falls back to the gdbstub (BIOS ROM), also for a
	// range that starts in the legacy BIOS window and runs into RAM.
	rom := make([]byte, 16)
	require.ErrorIs(t, shm.ReadPhysical(ctx, 0xFFFFFFF0, rom), ram.ErrNotBacked)
	require.NoError(t, m.ReadPhysical(ctx, 0xFFFFFFF0, rom))
	require.NotEqual(t, make([]byte, 16), rom, "reset vector code")
	legacy := make([]byte, 0x20000)
	require.NoError(t, m.ReadPhysical(ctx, 0xF0000, legacy))
	viaGDB := make([]byte, len(legacy))
	require.NoError(t, gdb.ReadPhysical(ctx, 0xF0000, viaGDB))
	require.Equal(t, viaGDB, legacy)
}
