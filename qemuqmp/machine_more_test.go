package qemuqmp_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/qemuqmp/qemutest"
	"github.com/kdstub/kdstub/qemuqmp/rsp"
)

func TestSMPPerCPURegistersAndAPBreakpoint(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{SMP: 2})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 30*time.Second)
	g := q.Guest
	require.Equal(t, 2, m.CPUCount())

	// The AP runs ap_tick once it is up; a breakpoint there must be reported by CPU 1.
	bp := qemuqmp.Breakpoint{Kind: qemuqmp.Hardware, Addr: g.KVA(t, "ap_tick")}
	require.NoError(t, m.AddBreakpoint(ctx, bp))
	require.NoError(t, m.Continue(ctx))
	ev := nextStop(t, ctx, m)
	require.Equal(t, qemuqmp.StopBreakpoint, ev.Reason, "%+v", ev)
	require.Equal(t, 1, ev.CPU)
	require.Equal(t, g.KVA(t, "ap_tick"), ev.PC)

	r0, err := m.Registers(ctx, 0)
	require.NoError(t, err)
	r1, err := m.Registers(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, g.KVA(t, "kpcr"), r0.GSBase)
	require.Equal(t, g.KVA(t, "kpcr")+0x100, r1.GSBase, "CPU 1 has its own KPCR")
	require.EqualValues(t, qemutest.GuestKernelGSBase, r0.KernelGSBase)
	require.Zero(t, r1.KernelGSBase)
	require.Equal(t, g.KVA(t, "ap_tick"), r1.RIP)
	require.NotEqual(t, r0.RIP, r1.RIP)
	require.Equal(t, r0.IDTRBase, r1.IDTRBase)
	require.Equal(t, r0.CR3, r1.CR3)

	// Stepping the AP over its breakpoint leaves the BSP where it is.
	st, err := m.Step(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, 1, st.CPU)
	r0b, err := m.Registers(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, r0.RIP, r0b.RIP)
	// Continue re-hits on the AP.
	require.NoError(t, m.Continue(ctx))
	ev = nextStop(t, ctx, m)
	require.Equal(t, 1, ev.CPU)
	require.Equal(t, g.KVA(t, "ap_tick"), ev.PC)
}

func TestInterruptWhileRunningAndExternalCont(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 30*time.Second)
	g := q.Guest
	require.False(t, m.Running())

	require.NoError(t, m.Continue(ctx))
	require.True(t, m.Running())
	_, err := m.Registers(ctx, 0)
	require.ErrorIs(t, err, qemuqmp.ErrRunning, "no gdb packet may be sent while the VM runs")
	// While it runs, physical reads go through pmemsave (the gdbstub must stay silent).
	require.Eventually(t, func() bool { return readU64(t, ctx, m, g.Phys(t, "counter")) > 1000 }, 10*time.Second, 10*time.Millisecond)
	require.True(t, m.Running())
	ev, err := m.Halt(ctx)
	require.NoError(t, err)
	require.False(t, m.Running())
	require.Equal(t, qemuqmp.StopInterrupted, ev.Reason)
	requireNoEvent(t, m, "Halt's own stop is returned, not queued")
	c1 := readU64(t, ctx, m, g.Phys(t, "counter"))
	require.NotZero(t, c1, "the guest ran")

	// A cont through the monitor is invisible to the gdbstub; the Machine must still know the VM runs.
	_, err = m.Monitor(ctx, "cont")
	require.NoError(t, err)
	require.True(t, m.Running(), "known as soon as Monitor returns")
	require.Eventually(t, func() bool { return readU64(t, ctx, m, g.Phys(t, "counter")) > c1 }, 10*time.Second, 10*time.Millisecond)
	ev, err = m.Halt(ctx)
	require.NoError(t, err)
	require.Equal(t, qemuqmp.StopInterrupted, ev.Reason)
	c2 := readU64(t, ctx, m, g.Phys(t, "counter"))
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, c2, readU64(t, ctx, m, g.Phys(t, "counter")), "really stopped")

	// Stop on a stopped VM is a no-op, not a hang.
	require.NoError(t, m.Stop(ctx))
}

func TestSetRegistersRoundTrip(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 30*time.Second)
	bootToMainLoop(t, ctx, m, q.Guest)

	r, err := m.Registers(ctx, 0)
	require.NoError(t, err)
	w := r
	w.RAX, w.R15, w.KernelGSBase = 0x1122334455667788, 0xCAFEBABE, 0xFEEDFACE00
	w.XMM[3][0] = 0x42
	require.NoError(t, m.SetRegisters(ctx, 0, w, amd64.HaveGPR|amd64.HaveBases|amd64.HaveFloat))
	got, err := m.Registers(ctx, 0)
	require.NoError(t, err)
	require.EqualValues(t, 0x1122334455667788, got.RAX)
	require.EqualValues(t, 0xCAFEBABE, got.R15)
	require.EqualValues(t, 0xFEEDFACE00, got.KernelGSBase)
	require.EqualValues(t, 0x42, got.XMM[3][0])
	require.Equal(t, r.RIP, got.RIP)

	// Groups not selected are not written even when they differ.
	w2 := got
	w2.RBX = 0x9999
	require.NoError(t, m.SetRegisters(ctx, 0, w2, amd64.HaveBases))
	got2, err := m.Registers(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, got.RBX, got2.RBX)

	w3 := got
	w3.IDTRBase++
	require.ErrorIs(t, m.SetRegisters(ctx, 0, w3, amd64.HaveDescriptors), qemuqmp.ErrUnsupported)
}

func TestPortIO(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 30*time.Second)
	// CMOS: select register 0x0F (shutdown status), write a value, read it back through the data port.
	require.NoError(t, m.WritePort(ctx, 0x70, 1, 0x0F))
	require.NoError(t, m.WritePort(ctx, 0x71, 1, 0x5A))
	require.NoError(t, m.WritePort(ctx, 0x70, 1, 0x0F))
	v, err := m.ReadPort(ctx, 0x71, 1)
	require.NoError(t, err)
	require.EqualValues(t, 0x5A, v)
	_, err = m.ReadPort(ctx, 0x71, 3)
	require.Error(t, err)
}

func TestResetIsReported(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 30*time.Second)
	bootToMainLoop(t, ctx, m, q.Guest)
	require.NoError(t, m.Reset(ctx))
	for {
		select {
		case ev := <-m.Events():
			if ev.Reason != qemuqmp.StopReset {
				continue
			}
			r, err := m.Registers(ctx, 0)
			require.NoError(t, err)
			require.EqualValues(t, 0xfff0, r.RIP, "back at the reset vector")
			require.Zero(t, r.CR0&amd64.CR0PG)
			return
		case <-ctx.Done():
			t.Fatal("no reset event")
		}
	}
}

func TestReverseRefusedOutsideReplay(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	m := q.Connect(t, qemuqmp.Config{})
	ctx := testCtx(t, 30*time.Second)
	_, err := m.ReverseStep(ctx, 0)
	require.ErrorIs(t, err, rsp.ErrUnsupported)
	require.ErrorIs(t, m.ReverseContinue(ctx), rsp.ErrUnsupported)
	// QEMU would have aborted on bs: it must still answer.
	_, err = m.Registers(ctx, 0)
	require.NoError(t, err)
}

func TestQEMUKilledYieldsErrGone(t *testing.T) {
	for _, running := range []bool{false, true} {
		name := map[bool]string{false: "stopped", true: "running"}[running]
		t.Run(name, func(t *testing.T) {
			q := qemutest.Start(t, qemutest.Options{})
			m := q.Connect(t, qemuqmp.Config{})
			ctx := testCtx(t, 20*time.Second)
			if running {
				require.NoError(t, m.Continue(ctx))
			}
			require.NoError(t, q.Kill())

			select {
			case <-m.Done():
			case <-ctx.Done():
				t.Fatal("machine did not notice QEMU's death")
			}
			var gone bool
			for !gone {
				select {
				case ev := <-m.Events():
					gone = ev.Reason == qemuqmp.StopGone
				case <-ctx.Done():
					t.Fatal("no StopGone event")
				}
			}
			callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			buf := make([]byte, 16)
			_, err := m.Registers(callCtx, 0)
			require.ErrorIs(t, err, qemuqmp.ErrGone)
			require.ErrorIs(t, m.ReadPhysical(callCtx, 0x100000, buf), qemuqmp.ErrGone)
			require.ErrorIs(t, m.Continue(callCtx), qemuqmp.ErrGone)
			require.ErrorIs(t, m.Stop(callCtx), qemuqmp.ErrGone)
			_, err = m.Step(callCtx, 0)
			require.ErrorIs(t, err, qemuqmp.ErrGone)
			require.ErrorIs(t, m.AddBreakpoint(callCtx, qemuqmp.Breakpoint{Kind: qemuqmp.Software, Addr: 0x1000}), qemuqmp.ErrGone)
			_, err = m.Monitor(callCtx, "info status")
			require.ErrorIs(t, err, qemuqmp.ErrGone)
			require.False(t, errors.Is(callCtx.Err(), context.DeadlineExceeded), "calls returned by deadline, not by ErrGone")
		})
	}
}
