package rsp_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/qemuqmp/qemutest"
	"github.com/kdstub/kdstub/qemuqmp/qmp"
	"github.com/kdstub/kdstub/qemuqmp/rsp"
)

func dial(t *testing.T, q *qemutest.QEMU) *rsp.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rsp.Dial(ctx, "unix:"+q.GDBSocket, nil)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// runToMain continues until tick is hit once, leaving the client stopped there.
func runToMain(t *testing.T, ctx context.Context, c *rsp.Client, g *qemutest.Guest) {
	t.Helper()
	require.NoError(t, c.InsertBreakpoint(ctx, rsp.ZSoftware, g.KVA(t, "tick"), 1))
	require.NoError(t, c.Continue(ctx))
	select {
	case sr := <-c.Stops():
		require.EqualValues(t, rsp.SigTrap, sr.Signal, sr.Raw)
	case <-ctx.Done():
		t.Fatal("no stop")
	}
	require.NoError(t, c.RemoveBreakpoint(ctx, rsp.ZSoftware, g.KVA(t, "tick"), 1))
}

func TestTargetXMLRegisterTable(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	c := dial(t, q)
	tab := c.Registers()
	for name, num := range map[string]int{"rax": 0, "rip": 16, "eflags": 17, "cs": 18, "gs": 23, "fs_base": 24,
		"gs_base": 25, "k_gs_base": 26, "cr0": 27, "cr2": 28, "cr3": 29, "cr4": 30, "cr8": 31, "efer": 32, "st0": 33,
		"xmm0": 49, "mxcsr": 65} {
		r, ok := tab.Lookup(name)
		require.True(t, ok, name)
		require.Equal(t, num, r.Num, name)
	}
	_, ok := tab.Lookup("cs_base")
	require.False(t, ok, "QEMU lists cs_base only inside a comment")
	require.Equal(t, 608, tab.Size)
	require.Len(t, tab.Regs, 66)
}

func TestMemoryReadsSplitAndReportPartial(t *testing.T) {
	// More than 1 GiB of RAM, so the last mapped page below 0x40000000 is backed (a virtual read of a PA
	// outside RAM also fails with E14).
	q := qemutest.Start(t, qemutest.Options{MemoryMB: 1100})
	c := dial(t, q)
	ctx := ctxFor(t)
	g := q.Guest
	runToMain(t, ctx, c, g)
	cpu0 := c.Threads()[0]

	// Larger than one m and not page aligned: virtual and physical views of the image agree.
	virt := make([]byte, 3*4096+100)
	n, err := c.ReadMemory(ctx, cpu0, g.KVA(t, "_start")+5, virt, false)
	require.NoError(t, err)
	require.Equal(t, len(virt), n)
	phys := make([]byte, len(virt))
	require.NoError(t, c.ReadPhysical(ctx, g.Phys(t, "_start")+5, phys))
	require.Equal(t, phys, virt)

	// 0x40000000 is the first unmapped VA of the tiny guest: a read crossing into it returns the part before.
	buf := make([]byte, 16)
	n, err = c.ReadMemory(ctx, cpu0, 0x3ffffff8, buf, false)
	require.True(t, rsp.IsFault(err), "%v", err)
	require.Equal(t, 8, n)
	// Physical reads of unassigned space never fail.
	require.NoError(t, c.ReadPhysical(ctx, 0x100000000, buf))
	require.Equal(t, make([]byte, 16), buf)

	// Writes round-trip, virtually and physically.
	pa := g.Phys(t, "tick_count") + 24
	_, err = c.WriteMemory(ctx, cpu0, qemutest.KernelBase+pa, []byte("virtual!"), false)
	require.NoError(t, err)
	got := make([]byte, 8)
	require.NoError(t, c.ReadPhysical(ctx, pa, got))
	require.Equal(t, "virtual!", string(got))
}

func TestMonitorAndThreads(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{SMP: 2})
	c := dial(t, q)
	ctx := ctxFor(t)
	require.Equal(t, []rsp.ThreadID{{PID: 1, TID: 1}, {PID: 1, TID: 2}}, c.Threads())
	out, err := c.Monitor(ctx, "info registers 1")
	require.NoError(t, err)
	require.Contains(t, out, "CPU#1")
	require.Contains(t, out, "IP=") // EIP= while the AP still waits in real mode
	_, err = c.Monitor(ctx, "no-such-command")
	// QEMU prints an error text and still ends with OK; either way the client must stay in sync.
	_ = err
	b, err := c.ReadRegister(ctx, c.Threads()[1], "rip")
	require.NoError(t, err)
	require.Len(t, b, 8)
}

func TestConnectToRunningVMDrainsAttachStop(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{Running: true})
	ctx := ctxFor(t)
	qc, err := qmp.Dial(ctx, "unix:"+q.QMPSocket, nil)
	require.NoError(t, err)
	defer qc.Close()
	require.Eventually(t, func() bool { r, err := qc.Running(ctx); return err == nil && r }, 5*time.Second, 5*time.Millisecond)
	c := dial(t, q) // attaching stops the VM with an unsolicited T02 the handshake must swallow
	require.False(t, c.Running())
	b, err := c.ReadRegister(ctx, c.Threads()[0], "rip")
	require.NoError(t, err)
	require.Len(t, b, 8)
	select {
	case sr := <-c.Stops():
		t.Fatalf("attach stop leaked: %s", sr.Raw)
	default:
	}
	// Detach resumes the VM.
	require.NoError(t, c.Detach(ctx))
	require.Eventually(t, func() bool { r, err := qc.Running(ctx); return err == nil && r }, 5*time.Second, 5*time.Millisecond)
	require.True(t, strings.HasPrefix(c.Err().Error(), "rsp: gdbstub connection gone"))
}

func TestInterruptAndRunningGuard(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	c := dial(t, q)
	ctx := ctxFor(t)
	require.NoError(t, c.Interrupt(), "a break-in on a stopped VM is a no-op")
	require.NoError(t, c.Continue(ctx))
	require.True(t, c.Running())
	_, err := c.Request(ctx, "g")
	require.ErrorIs(t, err, rsp.ErrRunning, "nothing but 0x03 may be sent while running")
	require.NoError(t, c.Interrupt())
	select {
	case sr := <-c.Stops():
		require.EqualValues(t, rsp.SigInt, sr.Signal, sr.Raw)
		require.True(t, sr.HasThread)
	case <-ctx.Done():
		t.Fatal("no stop after 0x03")
	}
	require.False(t, c.Running())
	_, err = c.Request(ctx, "g")
	require.NoError(t, err)
}

func TestSplitAddr(t *testing.T) {
	for in, want := range map[string][2]string{
		"unix:/run/gdb.sock": {"unix", "/run/gdb.sock"},
		"/run/gdb.sock":      {"unix", "/run/gdb.sock"},
		"./gdb.sock":         {"unix", "./gdb.sock"},
		"tcp:127.0.0.1:1234": {"tcp", "127.0.0.1:1234"},
		"localhost:1234":     {"tcp", "localhost:1234"},
	} {
		n, a := rsp.SplitAddr(in)
		require.Equal(t, want, [2]string{n, a}, in)
	}
}
