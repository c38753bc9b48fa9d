package e2e

import (
	"crypto/sha256"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
)

// TestContinueBreakIn50 alternates continue and break-in 50 times on one session over each transport; the guest makes
// progress between stops.
func TestContinueBreakIn50(t *testing.T) {
	forEachTransport(t, func(t *testing.T, attach attachFunc) {
		ctx := testCtx(t, 120*time.Second)
		s := startStub(t, 1)
		d := attach(t, ctx, s)
		counter := uint64(s.g.Manifest.Loop.Counter)
		d.breakIn(t, ctx)
		last := d.u64(t, ctx, counter)
		for i := 0; i < 50; i++ {
			// On a loaded machine QEMU may not get a time slice between a continue and a quick break-in, so a round
			// may take a few continue/break-in cycles (with longer pauses) before the counter moves; it must move.
			now := last
			for try, pause := 0, 5*time.Millisecond; try < 6 && now <= last; try, pause = try+1, pause*3 {
				d.cont(t, ctx, false, 0x400)
				time.Sleep(pause)
				sc := d.breakIn(t, ctx)
				require.Equal(t, kdproto.StatusBreakpoint, code(sc), "round %d", i)
				now = d.u64(t, ctx, counter)
			}
			require.Greater(t, now, last, "round %d: the guest ran", i)
			last = now
		}
		d.cont(t, ctx, false, 0x400)
	})
}

// TestDetachReattach20 connects 20 debuggers one after another over each transport; each breaks in, reads the
// version and detaches with a continue, and the guest keeps running in between.
func TestDetachReattach20(t *testing.T) {
	forEachTransport(t, func(t *testing.T, attach attachFunc) {
		ctx := testCtx(t, 120*time.Second)
		s := startStub(t, 1)
		for i := 0; i < 20; i++ {
			d := attach(t, ctx, s)
			sc := d.breakIn(t, ctx)
			require.Equal(t, kdproto.StatusBreakpoint, code(sc), "attach %d", i)
			v := d.request(t, ctx, kdproto.APIGetVersion, nil, nil, 0)
			require.Equal(t, uint64(s.g.Manifest.KernelBase), v.U.(*kdproto.GetVersion64).KernBase)
			d.cont(t, ctx, false, 0x400)
			require.NoError(t, d.close()) // hang up
			select {
			case <-d.srv:
			case <-time.After(10 * time.Second):
				t.Fatalf("attach %d: server did not end with its session", i)
			}
			require.True(t, s.m.Running(), "detach %d leaves the guest running", i)
		}
	})
}

// TestStealthRAMUnchanged hashes all guest RAM through the shared-memory backend with the guest stopped,
// runs a debugger session that sets 100 breakpoints, hardware breakpoints and watchpoints, reads and probes
// (without letting the guest execute), removes them and detaches; RAM must be byte-identical. A second phase
// lets the guest run through breakpoint hits, steps and watchpoint hits: the kernel image's code and
// read-only pages must still be identical (execution only changes data).
func TestStealthRAMUnchanged(t *testing.T) {
	ctx := testCtx(t, 120*time.Second)
	s := startStub(t, 1)
	man := s.g.Manifest
	require.NoError(t, s.m.Stop(ctx))
	before := hashFile(t, s.q.SharedRAM)

	d := s.attachSerial(t, ctx, "unix")
	d.breakIn(t, ctx) // the guest is already stopped: reported without running it
	text := uint64(man.KernelBase) + 0x4000
	var handles []uint32
	for i := 0; i < 100; i++ {
		va := text
		if i < 32 {
			va = text + uint64(i)*16
		}
		r := d.request(t, ctx, kdproto.APIWriteBreakPoint, &kdproto.WriteBreakpoint64{BreakPointAddress: va}, nil, 0)
		if i < 32 {
			require.Equal(t, kdproto.StatusSuccess, r.ReturnStatus, "breakpoint %d", i)
			handles = append(handles, r.U.(*kdproto.WriteBreakpoint64).BreakPointHandle)
		} else {
			require.Equal(t, kdproto.StatusUnsuccessful, r.ReturnStatus, "the table has 32 slots")
		}
		if i%10 == 9 && len(handles) > 0 {
			// Churn: remove and re-insert, as WinDbg does around every stop.
			h := handles[len(handles)-1]
			require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APIRestoreBreakPoint, &kdproto.RestoreBreakpoint{BreakPointHandle: h}, nil, 0).ReturnStatus)
			r := d.request(t, ctx, kdproto.APIWriteBreakPoint, &kdproto.WriteBreakpoint64{BreakPointAddress: text + 0x800}, nil, 0)
			handles[len(handles)-1] = r.U.(*kdproto.WriteBreakpoint64).BreakPointHandle
		}
	}
	ks := d.request(t, ctx, kdproto.APIReadControlSpace, &kdproto.ReadMemory64{TargetBaseAddress: 2, TransferCount: 0xF0}, nil, 0)
	kr, _, err := kdproto.DecodeKSpecialRegisters(ks.Data)
	require.NoError(t, err)
	kr.KernelDr0, kr.KernelDr1, kr.KernelDr2 = uint64(man.Loop.Counter), text+0x40, uint64(man.Loop.Buffer)
	kb, err := kr.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APIWriteControlSpace, &kdproto.WriteMemory64{TargetBaseAddress: 2, TransferCount: 0xF0}, kb, 0).ReturnStatus)
	// Arm them through the context's Dr7 (slot 0 write 8, slot 1 execute, slot 2 write 8) and disarm again.
	c := d.context(t, ctx, 0)
	c.Dr7 = 0x400 | 1 | 4 | 16 | 1<<16 | 2<<18 | 1<<24 | 2<<26
	cb, err := c.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APISetContext, &kdproto.SetContext{}, cb, 0).ReturnStatus)
	require.Equal(t, c.Dr7, d.context(t, ctx, 0).Dr7)
	c.Dr7 = 0x400
	cb, err = c.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APISetContext, &kdproto.SetContext{}, cb, 0).ReturnStatus)
	d.read(t, ctx, uint64(man.KDBG.Address), int(man.KDBG.Size))
	for _, h := range handles {
		require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APIRestoreBreakPoint, &kdproto.RestoreBreakpoint{BreakPointHandle: h}, nil, 0).ReturnStatus)
	}
	require.Equal(t, before, hashFile(t, s.q.SharedRAM), "guest RAM changed during a non-executing session")

	// Phase 2: execution with breakpoints, steps and watchpoints; code pages must not change.
	codeBefore := d.read(t, ctx, uint64(man.KernelBase), 0xC000) // headers, .text, PAGE, INIT... up to .data
	fn := uint64(man.Loop.FunctionVA)
	r := d.request(t, ctx, kdproto.APIWriteBreakPoint, &kdproto.WriteBreakpoint64{BreakPointAddress: fn}, nil, 0)
	h := r.U.(*kdproto.WriteBreakpoint64).BreakPointHandle
	for i := 0; i < 5; i++ {
		d.cont(t, ctx, false, 0x400|1|1<<16|2<<18)
		d.wait(t, ctx)
		d.cont(t, ctx, true, 0x400|1|1<<16|2<<18)
		d.wait(t, ctx)
	}
	require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APIRestoreBreakPoint, &kdproto.RestoreBreakpoint{BreakPointHandle: h}, nil, 0).ReturnStatus)
	require.Equal(t, codeBefore, d.read(t, ctx, uint64(man.KernelBase), 0xC000), "kernel code changed")
	d.cont(t, ctx, false, 0x400)
}

func hashFile(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return sha256.Sum256(b)
}
