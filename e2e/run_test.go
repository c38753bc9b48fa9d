package e2e

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/windows/target"
)

// writersOf decodes the guest's loop code from the manifest's entry and returns the end address (the PC a
// write watchpoint reports, since it traps after the access) of every instruction with a RIP-relative memory
// operand at addr.
func writersOf(t *testing.T, ctx context.Context, d *debugger, entry, addr uint64) map[uint64]bool {
	t.Helper()
	code := d.read(t, ctx, entry, 0x100)
	ends := map[uint64]bool{}
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			off++
			continue
		}
		next := entry + uint64(off+inst.Len)
		for _, a := range inst.Args {
			if m, ok := a.(x86asm.Mem); ok && m.Base == x86asm.RIP && next+uint64(m.Disp) == addr {
				ends[next] = true
			}
		}
		off += inst.Len
	}
	return ends
}

// TestBreakpointStepWatch drives the run-control semantics against the live guest: a breakpoint on the
// exported loop function hits with PC at the breakpoint, is stepped over the way WinDbg does it (restore,
// trace, re-insert) and hits again; single steps advance; `ba w 8` on the loop counter and a 64 KiB
// watchpoint on the loop buffer fire right after the writing instruction. No byte of guest code changes.
func TestBreakpointStepWatch(t *testing.T) {
	forEachTransport(t, func(t *testing.T, attach attachFunc) {
		ctx := testCtx(t, 120*time.Second)
		s := startStub(t, 1)
		d := attach(t, ctx, s)
		man := s.g.Manifest
		fn := uint64(man.Loop.FunctionVA)
		d.breakIn(t, ctx)
		origFn := d.read(t, ctx, fn, 16)
		r, err := s.m.Registers(ctx, 0)
		require.NoError(t, err)
		fnPA := translate(t, ctx, s, r.CR3, fn)

		// Breakpoint hit.
		bp := d.request(t, ctx, kdproto.APIWriteBreakPoint, &kdproto.WriteBreakpoint64{BreakPointAddress: fn}, nil, 0)
		require.Equal(t, kdproto.StatusSuccess, bp.ReturnStatus)
		h := bp.U.(*kdproto.WriteBreakpoint64).BreakPointHandle
		require.NotZero(t, h)
		phys := make([]byte, 16)
		require.NoError(t, s.m.ReadPhysical(ctx, fnPA, phys))
		require.Equal(t, origFn, phys, "an armed breakpoint leaves guest memory unchanged")
		d.cont(t, ctx, false, 0x400)
		sc := d.wait(t, ctx)
		require.Equal(t, kdproto.StatusBreakpoint, code(sc))
		require.Equal(t, fn, sc.ProgramCounter)
		require.Equal(t, fn, sc.U.(*kdproto.Exception64).ExceptionAddress)
		require.Equal(t, origFn, sc.ControlReport.InstructionStream[:], "no breakpoint byte in the reported stream")
		require.Equal(t, fn, d.context(t, ctx, 0).Rip)

		// Step over as WinDbg does: remove, trace, re-insert, continue → the next iteration hits again.
		require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APIRestoreBreakPoint, &kdproto.RestoreBreakpoint{BreakPointHandle: h}, nil, 0).ReturnStatus)
		d.cont(t, ctx, true, 0x400)
		step := d.wait(t, ctx)
		require.Equal(t, kdproto.StatusSingleStep, code(step))
		require.Greater(t, step.ProgramCounter, fn, "the step executed the first instruction (push rbp)")
		require.Less(t, step.ProgramCounter, fn+16)
		require.NotZero(t, step.ControlReport.Dr6&(1<<14), "DR6.BS reported for a single step")
		bp = d.request(t, ctx, kdproto.APIWriteBreakPoint, &kdproto.WriteBreakpoint64{BreakPointAddress: fn}, nil, 0)
		h = bp.U.(*kdproto.WriteBreakpoint64).BreakPointHandle
		d.cont(t, ctx, false, 0x400)
		again := d.wait(t, ctx)
		require.Equal(t, kdproto.StatusBreakpoint, code(again))
		require.Equal(t, fn, again.ProgramCounter, "the breakpoint hits again")

		// A step sitting on the armed breakpoint still executes it (WinDbg may trace without removing).
		d.cont(t, ctx, true, 0x400)
		step = d.wait(t, ctx)
		require.Equal(t, kdproto.StatusSingleStep, code(step))
		require.NotEqual(t, fn, step.ProgramCounter)
		for i := 0; i < 3; i++ {
			prev := step.ProgramCounter
			d.cont(t, ctx, true, 0x400)
			step = d.wait(t, ctx)
			require.Equal(t, kdproto.StatusSingleStep, code(step))
			require.NotEqual(t, prev, step.ProgramCounter, "step %d advances", i)
		}
		require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APIRestoreBreakPoint, &kdproto.RestoreBreakpoint{BreakPointHandle: h}, nil, 0).ReturnStatus)

		// ba w 8 on the counter: KernelDr0 through control space, Dr7 through Continue2.
		counter := uint64(man.Loop.Counter)
		writers := writersOf(t, ctx, d, uint64(man.Loop.Entry), counter)
		require.NotEmpty(t, writers, "the loop writes the counter")
		ks := d.request(t, ctx, kdproto.APIReadControlSpace, &kdproto.ReadMemory64{TargetBaseAddress: 2, TransferCount: 0xF0}, nil, 0)
		kr, _, err := kdproto.DecodeKSpecialRegisters(ks.Data)
		require.NoError(t, err)
		kr.KernelDr0 = counter
		kb, err := kr.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APIWriteControlSpace, &kdproto.WriteMemory64{TargetBaseAddress: 2, TransferCount: 0xF0}, kb, 0).ReturnStatus)
		before := d.u64(t, ctx, counter)
		const dr7W8 = 0x400 | 1 | 1<<16 | 2<<18 // L0, R/W0 = write, LEN0 = 8 bytes
		d.cont(t, ctx, false, dr7W8)
		w := d.wait(t, ctx)
		require.Equal(t, kdproto.StatusSingleStep, code(w))
		require.Equal(t, uint64(1), w.ControlReport.Dr6&0xF, "DR6.B0 names slot 0")
		require.Equal(t, uint64(dr7W8), w.ControlReport.Dr7)
		require.True(t, writers[w.ProgramCounter], "watchpoint reported right after the writing instruction (PC %#x, writers %v)", w.ProgramCounter, writers)
		require.Equal(t, before+1, d.u64(t, ctx, counter), "exactly one write happened")
		// Clear it: Dr7 0 on the next continue; then break in.
		d.cont(t, ctx, false, 0x400)
		time.Sleep(20 * time.Millisecond)
		d.breakIn(t, ctx)

		// A 64 KiB watchpoint on the loop buffer (a kdstub extension on the Target; KD's DR7 tops out at 8 bytes).
		buf, size := uint64(man.Loop.Buffer), uint64(man.Loop.BufferSize)
		require.NoError(t, s.target.Watch(ctx, target.WatchWrite, buf, size))
		d.cont(t, ctx, false, 0x400)
		bw := d.wait(t, ctx)
		require.Equal(t, kdproto.StatusSingleStep, code(bw))
		require.GreaterOrEqual(t, bw.ProgramCounter, uint64(man.KernelBase))
		require.Less(t, bw.ProgramCounter, uint64(man.KernelBase+man.KernelSize))
		require.NoError(t, s.target.Unwatch(ctx, target.WatchWrite, buf, size))

		// After all of it, the function's code is still the original bytes, physically.
		require.NoError(t, s.m.ReadPhysical(ctx, fnPA, phys))
		require.Equal(t, origFn, phys)
		d.cont(t, ctx, false, 0x400)
	})
}

// TestSwitchProcessor checks a 2-CPU guest: both CPUs are reported, SwitchProcessor answers with a state
// change from the new CPU, and per-CPU requests (context, control space) address that CPU.
func TestSwitchProcessor(t *testing.T) {
	forEachTransport(t, func(t *testing.T, attach attachFunc) {
		ctx := testCtx(t, 90*time.Second)
		s := startStub(t, 2)
		d := attach(t, ctx, s)
		man := s.g.Manifest
		sc := d.breakIn(t, ctx)
		require.Equal(t, uint32(2), sc.NumberProcessors)
		for cpu := uint16(0); cpu < 2; cpu++ {
			other := 1 - cpu
			m, err := kdproto.NewManipulate(kdproto.APISwitchProcessor, nil, nil)
			require.NoError(t, err)
			m.Processor = other
			_, err = d.h.Request(ctx, m)
			require.NoError(t, err)
			sw := d.wait(t, ctx)
			require.Equal(t, other, sw.Processor)
			r, err := s.m.Registers(ctx, int(other))
			require.NoError(t, err)
			require.Equal(t, r.RIP, sw.ProgramCounter, "reported from cpu %d", other)
			require.Equal(t, r.RIP, d.context(t, ctx, other).Rip)
			pcr := d.request(t, ctx, kdproto.APIReadControlSpace, &kdproto.ReadMemory64{TargetBaseAddress: 0, TransferCount: 8}, nil, other)
			require.Equal(t, uint64(man.CPUs[other].KPCR), binary.LittleEndian.Uint64(pcr.Data))
		}
		// All CPUs are frozen while stopped: both per-CPU counters hold still.
		c0 := d.u64(t, ctx, uint64(man.CPUs[0].Counter))
		c1 := d.u64(t, ctx, uint64(man.CPUs[1].Counter))
		time.Sleep(100 * time.Millisecond)
		require.Equal(t, c0, d.u64(t, ctx, uint64(man.CPUs[0].Counter)))
		require.Equal(t, c1, d.u64(t, ctx, uint64(man.CPUs[1].Counter)))
		d.cont(t, ctx, false, 0x400)
		time.Sleep(100 * time.Millisecond)
		d.breakIn(t, ctx)
		require.Greater(t, d.u64(t, ctx, uint64(man.CPUs[1].Counter)), c1, "cpu 1 ran while continued")
		d.cont(t, ctx, false, 0x400)
	})
}

// TestStepOverRange: a Continue2 step with a symbol range steps silently until the PC leaves the range, so
// stepping out of the exported function reports one stop, at its return address.
func TestStepOverRange(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	s := startStub(t, 1)
	d := s.attachSerial(t, ctx, "unix")
	fn := uint64(s.g.Manifest.Loop.FunctionVA)
	d.breakIn(t, ctx)
	bp := d.request(t, ctx, kdproto.APIWriteBreakPoint, &kdproto.WriteBreakpoint64{BreakPointAddress: fn}, nil, 0)
	d.cont(t, ctx, false, 0x400)
	require.Equal(t, fn, d.wait(t, ctx).ProgramCounter)
	require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APIRestoreBreakPoint, &kdproto.RestoreBreakpoint{BreakPointHandle: bp.U.(*kdproto.WriteBreakpoint64).BreakPointHandle}, nil, 0).ReturnStatus)
	ret := d.u64(t, ctx, d.context(t, ctx, 0).Rsp)
	body := d.read(t, ctx, fn, 64)
	end := fn
	for off := 0; off < len(body); {
		inst, err := x86asm.Decode(body[off:], 64)
		require.NoError(t, err)
		off += inst.Len
		if inst.Op == x86asm.RET {
			end = fn + uint64(off)
			break
		}
	}
	require.Greater(t, end, fn, "the function ends with ret")
	d.request(t, ctx, kdproto.APIContinue2, &kdproto.Continue2{ContinueStatus: kdproto.DBGContinue, TraceFlag: 1, Dr7: 0x400,
		CurrentSymbolStart: fn, CurrentSymbolEnd: end}, nil, 0)
	sc := d.wait(t, ctx)
	require.Equal(t, kdproto.StatusSingleStep, code(sc))
	require.Equal(t, ret, sc.ProgramCounter, "one stop, at the return address")
	d.cont(t, ctx, false, 0x400)
}
