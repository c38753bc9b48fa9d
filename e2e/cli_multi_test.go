package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdnet"
	"github.com/kdstub/kdstub/kdproto/serial"
	"github.com/kdstub/kdstub/qemuqmp/qemutest"
)

// TestServeCommandTwoTransports runs the CLI with KD serial and KDNET target= mode at once: a serial debugger
// attaches first; a second serial debugger is refused while it is attached; after it hangs up a KDNET debugger
// attaches on the other transport, breaks in and reads the version.
func TestServeCommandTwoTransports(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	q := bootGuest(t, false)
	sock := filepath.Join(t.TempDir(), "kd.sock")
	udp := freeUDPAddr(t)
	lines := startServe(t, q, "--serial", "unix-listen:"+sock, "--kdnet-listen", udp)
	key := printedKDNETKey(t, ctx, lines)
	man := guest(t, 1).Manifest

	// 1. Serial debugger.
	var tr *serial.Transport
	var err error
	for tr == nil {
		if tr, err = serial.Dial(ctx, "unix", sock); err != nil {
			select {
			case <-ctx.Done():
				t.Fatalf("serve never listened: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	d := &debugger{h: startHost(sctx, tr, kdproto.DialectKDCOM)}
	v := breakInUntilKernel(t, sctx, d)
	require.Equal(t, uint64(man.KernelBase), v.KernBase)

	// 2. A second serial debugger while the first is attached: the stub hangs up on it.
	c2, err := net.Dial("unix", sock)
	require.NoError(t, err)
	require.NoError(t, c2.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = c2.Read(make([]byte, 64))
	require.True(t, errors.Is(err, io.EOF), "the second debugger is refused (connection closed), got %v", err)
	c2.Close()
	// The first one is still served.
	require.Equal(t, kdproto.StatusSuccess, d.request(t, sctx, kdproto.APIGetVersion, nil, nil, 0).ReturnStatus)
	d.cont(t, sctx, false, 0x400)
	cancel()
	tr.Close()

	// 3. KDNET debugger on the other transport, once the serial one is gone.
	k, err := kdnet.ParseKey(key)
	require.NoError(t, err)
	htr, err := kdnet.NewHost(ctx, kdnet.HostConfig{Key: k, Local: netip.MustParseAddrPort("127.0.0.1:0"), Target: netip.MustParseAddrPort(udp)})
	require.NoError(t, err)
	defer htr.Close()
	select {
	case <-htr.Connected():
	case <-ctx.Done():
		t.Fatal("no KDNET handshake")
	}
	kd := &debugger{h: startHost(ctx, htr, kdproto.DialectKDNET)}
	v = breakInUntilKernel(t, ctx, kd)
	require.Equal(t, uint64(man.KernelBase), v.KernBase, "KDNET debugger after the serial one")
	kd.cont(t, ctx, false, 0x400)
}

// TestServeCommandSurvivesQEMURestart kills QEMU under an attached serial debugger and starts it again on the
// same sockets: serve reconnects, the debugger breaks in again, the kernel is rediscovered and the version read.
func TestServeCommandSurvivesQEMURestart(t *testing.T) {
	ctx := testCtx(t, 120*time.Second)
	g := guest(t, 1)
	dir := t.TempDir()
	opts := qemutest.Options{Kernel: g.ELF, MemoryMB: int(g.RAMSize >> 20), Running: true, Dir: dir}
	q := qemutest.Start(t, opts)
	sock := filepath.Join(t.TempDir(), "kd.sock")
	startServe(t, q, "--serial", "unix-listen:"+sock)
	var tr *serial.Transport
	var err error
	for tr == nil {
		if tr, err = serial.Dial(ctx, "unix", sock); err != nil {
			select {
			case <-ctx.Done():
				t.Fatalf("serve never listened: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	defer tr.Close()
	d := &debugger{h: startHost(ctx, tr, kdproto.DialectKDCOM)}
	v := breakInUntilKernel(t, ctx, d)
	require.Equal(t, uint64(g.Manifest.KernelBase), v.KernBase)
	// A breakpoint set before QEMU goes away is re-armed in the new QEMU: killed while the debugger holds the
	// guest stopped, restarted, continued: the next stop is that breakpoint, hit by the rebooted guest.
	fn := uint64(g.Manifest.Loop.FunctionVA)
	r := d.request(t, ctx, kdproto.APIWriteBreakPoint, &kdproto.WriteBreakpoint64{BreakPointAddress: fn}, nil, 0)
	require.Equal(t, kdproto.StatusSuccess, r.ReturnStatus)
	h := r.U.(*kdproto.WriteBreakpoint64).BreakPointHandle

	require.NoError(t, q.Kill())
	q2 := qemutest.Start(t, opts)
	require.Equal(t, q.QMPSocket, q2.QMPSocket, "same endpoints")
	var sc *kdproto.StateChange
	for sc == nil {
		// The continue fails (nothing is sent) until serve has reconnected; the debugger then waits for the stop.
		time.Sleep(200 * time.Millisecond)
		d.cont(t, ctx, false, 0x400)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		sc, _ = d.h.WaitStateChange(wctx)
		cancel()
	}
	require.Equal(t, fn, sc.ProgramCounter, "the re-armed breakpoint stopped the new guest")
	require.Equal(t, kdproto.StatusBreakpoint, code(sc))
	require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APIRestoreBreakPoint, &kdproto.RestoreBreakpoint{BreakPointHandle: h}, nil, 0).ReturnStatus)
	d.cont(t, ctx, false, 0x400)

	// The same KD session: break in again (the first break-ins may come before serve has reconnected).
	v = breakInUntilKernel(t, ctx, d)
	require.Equal(t, uint64(g.Manifest.KernelBase), v.KernBase, "kernel rediscovered in the new QEMU")
	require.Equal(t, []byte(g.Manifest.KDBG.Plaintext), d.read(t, ctx, uint64(g.Manifest.KDBG.Address), int(g.Manifest.KDBG.Size)))
	d.cont(t, ctx, false, 0x400)
}
