package qemuqmp_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/qemuqmp/qemutest"
)

// stopWithin runs one Stop bounded by d and fails the test when it does not return: the defect this guards
// against is a Stop that waits forever for a stop reply QEMU never sends.
func stopWithin(t *testing.T, ctx context.Context, m *qemuqmp.Machine, d time.Duration, what string, i int) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	require.NoError(t, m.Stop(sctx), "%s: iteration %d: Stop did not return within %v", what, i, d)
	require.False(t, m.Running(), "%s: iteration %d", what, i)
	require.Less(t, time.Since(start), d)
}

// TestStopRightAfterContinue is the race behind the blocking Stop: the gdbstub's "c" and the QMP "stop" travel
// on different sockets, so QEMU may handle the stop first (a no-op on a stopped VM: no event, no T02) and then
// run the guest on. Stop must notice and stop it again, never wait for a wake-up that does not come.
func TestStopRightAfterContinue(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{SMP: 2})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 90*time.Second)
	for i := 0; i < 300; i++ {
		require.NoError(t, m.Continue(ctx))
		if i%2 == 1 {
			// A small QMP round trip between the gdbstub's "c" and the stop, as a KD break-in has.
			_, err := m.QMP().Running(ctx)
			require.NoError(t, err)
		}
		stopWithin(t, ctx, m, 3*time.Second, "continue+stop", i)
	}
	// The machine is still usable: registers read, and the guest runs and stops again.
	_, err := m.Registers(ctx, 0)
	require.NoError(t, err)
}

// TestStopRacingBreakpoints stops while a breakpoint is hit over and over: each Stop either finds the VM
// already stopped by the breakpoint or stops it itself, and returns promptly either way.
func TestStopRacingBreakpoints(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 90*time.Second)
	bootToMainLoop(t, ctx, m, q.Guest)
	for i := 0; i < 150; i++ {
		require.NoError(t, m.Continue(ctx))
		if i%3 == 1 {
			time.Sleep(time.Duration(i%7) * 100 * time.Microsecond)
		}
		stopWithin(t, ctx, m, 3*time.Second, "breakpoint race", i)
	}
	_, err := m.Registers(ctx, 0)
	require.NoError(t, err)
}

// TestStopAfterCancelledRequest abandons requests mid-flight (their late replies are dropped as orphans), then
// stops a running VM: the orphan accounting must not swallow the stop reply.
func TestStopAfterCancelledRequest(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 60*time.Second)
	g := q.Guest
	for i := 0; i < 40; i++ {
		cctx, cancel := context.WithCancel(ctx)
		cancel() // already cancelled: the request is abandoned at once or never sent
		buf := make([]byte, 8)
		_, _ = m.ReadVirtual(cctx, 0, g.KVA(t, "counter"), buf)
		short, cancel2 := context.WithTimeout(ctx, time.Duration(i%4)*20*time.Microsecond)
		_, _ = m.Registers(short, 0)
		cancel2()
		require.NoError(t, m.Continue(ctx))
		stopWithin(t, ctx, m, 3*time.Second, "after cancelled request", i)
	}
	_, err := m.Registers(ctx, 0)
	require.NoError(t, err)
}

// requireNoEvent asserts that nothing is queued on Events (the pump delivers within microseconds; 50 ms is
// generous).
func requireNoEvent(t *testing.T, m *qemuqmp.Machine, msg string) {
	t.Helper()
	select {
	case ev := <-m.Events():
		t.Fatalf("%s: unexpected event %+v", msg, ev)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestStopDoesNotQueueEvents: callers that stop the VM to inspect it and never read Events (scan, discovery)
// must not pile events up; a stop nobody asked for still arrives on Events.
func TestStopDoesNotQueueEvents(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 30*time.Second)
	for i := 0; i < 20; i++ {
		require.NoError(t, m.Continue(ctx))
		require.NoError(t, m.Stop(ctx))
	}
	requireNoEvent(t, m, "20 Stop calls")
	// A pause from elsewhere (QMP stop through the monitor) is nobody's Halt: it is queued.
	require.NoError(t, m.Continue(ctx))
	_, err := m.Monitor(ctx, "stop")
	require.NoError(t, err)
	ev := nextStop(t, ctx, m)
	require.Equal(t, qemuqmp.StopInterrupted, ev.Reason)
	require.False(t, m.Running())
}
