package qemuqmp_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/qemuqmp/qemutest"
)

type replayStop struct {
	icount  uint64
	pc      uint64
	counter uint64
}

// TestRecordReplayDeterministicStops records a short run, then replays it twice with a breakpoint and a
// watchpoint: every stop must land at the same instruction count, PC and guest state both times.
func TestRecordReplayDeterministicStops(t *testing.T) {
	if testing.Short() {
		t.Skip("record/replay takes a few seconds")
	}
	ctx := testCtx(t, 90*time.Second)
	rec := qemutest.Start(t, qemutest.Options{RRMode: "record", RRSnapshot: true})
	m := rec.Connect(t, qemuqmp.Config{})
	g := rec.Guest
	require.NoError(t, m.Continue(ctx))
	// Run until the guest has incremented watched a few times (every 65536 iterations).
	require.Eventually(t, func() bool { return readU64(t, ctx, m, g.Phys(t, "watched")) >= 3 }, 30*time.Second, 20*time.Millisecond)
	info, err := m.QMP().QueryReplay(ctx)
	require.NoError(t, err)
	require.Equal(t, "record", info.Mode)
	require.NoError(t, m.QMP().Quit(ctx))
	require.NoError(t, rec.Wait(ctx))

	replay := func(reverse bool) []replayStop {
		q := qemutest.Start(t, qemutest.Options{RRMode: "replay", RRFile: rec.RRFile, RRSnapshot: true, RRDisk: rec.RRDisk})
		m := q.Connect(t, qemuqmp.Config{})
		info, err := m.QMP().QueryReplay(ctx)
		require.NoError(t, err)
		require.Equal(t, "play", info.Mode)
		tick := qemuqmp.Breakpoint{Kind: qemuqmp.Software, Addr: g.KVA(t, "tick")}
		watch := qemuqmp.Breakpoint{Kind: qemuqmp.WatchWrite, Addr: g.KVA(t, "watched"), Len: 8}
		require.NoError(t, m.AddBreakpoint(ctx, tick))
		var stops []replayStop
		record := func(ev qemuqmp.StopEvent) {
			ri, err := m.QMP().QueryReplay(ctx)
			require.NoError(t, err)
			stops = append(stops, replayStop{icount: ri.Icount, pc: ev.PC, counter: readU64(t, ctx, m, g.Phys(t, "counter"))})
		}
		for range 3 { // three tick hits, stepping over the breakpoint each time
			require.NoError(t, m.Continue(ctx))
			ev := nextStop(t, ctx, m)
			require.Equal(t, qemuqmp.StopBreakpoint, ev.Reason, "%+v", ev)
			record(ev)
		}
		require.NoError(t, m.RemoveBreakpoint(ctx, tick))
		require.NoError(t, m.AddBreakpoint(ctx, watch))
		for range 2 {
			require.NoError(t, m.Continue(ctx))
			ev := nextStop(t, ctx, m)
			require.Equal(t, qemuqmp.StopWatchpoint, ev.Reason, "%+v", ev)
			record(ev)
		}
		if reverse {
			before := stops[len(stops)-1].icount
			ev, err := m.ReverseStep(ctx, 0)
			require.NoError(t, err)
			ri, err := m.QMP().QueryReplay(ctx)
			require.NoError(t, err)
			require.Equal(t, before-1, ri.Icount, "reverse step went back one instruction (%+v)", ev)
		}
		require.NoError(t, q.Kill()) // the next replay needs the qcow2's write lock
		return stops
	}
	first := replay(false)
	second := replay(true)
	require.Len(t, first, 5)
	require.Equal(t, first, second)
	for i := 1; i < 3; i++ {
		require.Equal(t, first[i-1].counter+1, first[i].counter)
		require.Greater(t, first[i].icount, first[i-1].icount)
	}
	require.Equal(t, uint64(65536), first[3].counter)
	require.Equal(t, uint64(2*65536), first[4].counter)
}

// TestSharedRAMAbove4G checks the GPA→file-offset map across the PCI hole: with 5 GiB on pc, RAM above 4 GiB
// lives at file offset GPA-1GiB.
func TestSharedRAMAbove4G(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{SharedRAM: true, MemoryMB: 5 * 1024})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 30*time.Second)
	gdb, _, shm := m.Backends()
	require.NotNil(t, shm)
	for _, pa := range []uint64{0xBFFFF000, 0x100000000, 0x17FFFF000} {
		val := []byte{0xDE, 0xAD, byte(pa >> 32), byte(pa >> 24), 0x11, 0x22, 0x33, 0x44}
		require.NoError(t, gdb.WritePhysical(ctx, pa, val))
		got := make([]byte, 8)
		require.NoError(t, shm.ReadPhysical(ctx, pa, got), "PA %#x", pa)
		require.Equal(t, val, got, "PA %#x", pa)
	}
	got := make([]byte, 8)
	require.Error(t, shm.ReadPhysical(ctx, 0xC0000000, got), "the PCI hole is not RAM")
	require.Error(t, shm.ReadPhysical(ctx, 0x180000000, got), "beyond RAM")
}
