package target

import (
	"context"
	"errors"
	"fmt"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/kdproto"
)

// processorLevel is KeProcessorLevel (CPU family 6) as a running x64 kernel reports it.
const processorLevel = 6

// exception describes the DBGKM_EXCEPTION64 to report.
type exception struct {
	code    uint32
	params  uint32 // NumberParameters (ExceptionInformation[0] = 0 when 1)
	dr6Bits uint64 // bits to set in the reported DR6 (B0..B3, BS)
}

// ErrGone is returned by WaitStop when the machine went away.
var ErrGone = errors.New("machine gone")

// Stopped implements kdproto.Target.
func (t *Target) Stopped(ctx context.Context) (*kdproto.StateChange, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil || t.m.Running() {
		return nil, nil
	}
	return t.pending, nil
}

// Break implements kdproto.Target.
func (t *Target) Break(ctx context.Context) error {
	t.mu.Lock()
	if !t.m.Running() {
		// Already stopped (e.g. paused by someone else, or a stop that raced the break-in): report the current
		// state as a break-in without touching the machine, unless the kernel is not up yet (holdBreakIn).
		if t.queued == nil && !t.awaitKernel {
			t.running = false
			t.invalidate()
			held, err := t.holdBreakIn(ctx)
			if err != nil {
				t.mu.Unlock()
				return err
			}
			if held {
				t.mu.Unlock()
				t.wakeWaitStop()
				return nil
			}
			sc, err := t.stateChange(ctx, t.current, exception{code: kdproto.StatusBreakpoint, params: 1})
			if err != nil {
				t.mu.Unlock()
				return err
			}
			t.queued = sc
		}
		t.mu.Unlock()
		t.wakeWaitStop()
		return nil
	}
	t.mu.Unlock()
	// One attempt bounded by the caller's context: the machine's Stop settles every race itself (a stop that
	// raced a resume or a breakpoint) and never waits for a wake-up that may not come.
	ev, err := t.m.Stop(ctx)
	if err != nil {
		return fmt.Errorf("stop the guest: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if ev.Reason == StopGone {
		return fmt.Errorf("stop the guest: %w: %v", ErrGone, ev.Err)
	}
	if ev.Reason == StopInterrupted {
		t.running = false
		t.invalidate()
		held, err := t.holdBreakIn(ctx)
		if err != nil {
			return err
		}
		if held {
			t.wakeWaitStop()
			return nil
		}
	}
	// The stop is returned, not queued on Events: report it from here (a breakpoint that beat the break-in is
	// reported as that breakpoint).
	sc, err := t.onStop(ctx, ev)
	if err != nil {
		return err
	}
	t.queued = sc
	t.wakeWaitStop()
	return nil
}

// wakeWaitStop makes a WaitStop blocked on Events look at t.queued again: Break's stop is returned by the
// machine, not queued on Events, so nothing else would wake it.
func (t *Target) wakeWaitStop() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// WaitStop implements kdproto.Target.
func (t *Target) WaitStop(ctx context.Context) (*kdproto.StateChange, error) {
	for {
		t.mu.Lock()
		if sc := t.queued; sc != nil {
			t.queued, t.pending, t.running = nil, sc, false
			t.mu.Unlock()
			return sc, nil
		}
		if t.awaitKernel {
			t.mu.Unlock()
			return t.waitKernel(ctx)
		}
		t.mu.Unlock()
		var ev Stop
		var ok bool
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.kick:
			continue // Break queued a stop
		case ev, ok = <-t.m.Events():
		}
		if !ok {
			return nil, ErrGone
		}
		switch ev.Reason {
		case StopGone:
			return nil, fmt.Errorf("%w: %v", ErrGone, ev.Err)
		case StopReset:
			t.log.Info("guest reset: the kernel will be rediscovered at the next stop")
			t.mu.Lock()
			t.rediscover = true
			t.invalidate()
			t.mu.Unlock()
			continue
		}
		if t.m.Running() {
			// A stop reported before the latest resume (someone else's Stop, or one that raced a breakpoint):
			// the guest runs again, so it is not the stop we wait for.
			t.log.Debug("stale stop event ignored", "reason", ev.Reason, "cpu", ev.CPU)
			continue
		}
		t.mu.Lock()
		if ev.Reason == StopInterrupted && !t.awaitKernel {
			// Someone else's stop: a kernel that is not up yet does not report it either.
			t.running = false
			t.invalidate()
			held, err := t.holdBreakIn(ctx)
			if err != nil {
				t.mu.Unlock()
				return nil, err
			}
			if held {
				t.mu.Unlock()
				continue
			}
		}
		sc, err := t.onStop(ctx, ev)
		t.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return sc, nil
	}
}

// onStop turns a machine stop into the state change a debug-mode kernel would send. Callers hold t.mu.
func (t *Target) onStop(ctx context.Context, ev Stop) (*kdproto.StateChange, error) {
	t.running = false
	t.invalidate()
	t.ensureKernel(ctx)
	cpu := ev.CPU
	if cpu < 0 || cpu >= t.m.CPUCount() {
		cpu = t.current
	}
	t.current = cpu
	ex, err := t.classify(ctx, cpu, ev)
	if err != nil {
		return nil, err
	}
	sc, err := t.stateChange(ctx, cpu, ex)
	if err != nil {
		return nil, err
	}
	t.pending = sc
	return sc, nil
}

// classify picks the exception code and DR6 bits for a stop. Callers hold t.mu.
func (t *Target) classify(ctx context.Context, cpu int, ev Stop) (exception, error) {
	switch ev.Reason {
	case StopStep:
		return exception{code: kdproto.StatusSingleStep, dr6Bits: amd64.DR6BS}, nil
	case StopWatchpoint:
		slot := t.matchDR(cpu, ev.WatchAddr, false)
		for other := 0; slot < 0 && other < len(t.dr); other++ {
			slot = t.matchDR(other, ev.WatchAddr, false)
		}
		ex := exception{code: kdproto.StatusSingleStep}
		if slot >= 0 {
			ex.dr6Bits = 1 << slot
		}
		return ex, nil
	case StopBreakpoint:
		r, err := t.registers(ctx, cpu)
		if err != nil {
			return exception{}, err
		}
		if t.bpRefs[r.RIP] == 0 {
			if slot := t.matchDR(cpu, r.RIP, true); slot >= 0 {
				return exception{code: kdproto.StatusSingleStep, dr6Bits: 1 << slot}, nil
			}
		}
		return exception{code: kdproto.StatusBreakpoint, params: 1}, nil
	}
	return exception{code: kdproto.StatusBreakpoint, params: 1}, nil
}

// stateChange builds DBGKD_ANY_WAIT_STATE_CHANGE for cpu at its current PC. Callers hold t.mu.
func (t *Target) stateChange(ctx context.Context, cpu int, ex exception) (*kdproto.StateChange, error) {
	r, err := t.registers(ctx, cpu)
	if err != nil {
		return nil, err
	}
	d := &t.dr[cpu]
	d.dr6 = d.dr6&^0xF | ex.dr6Bits&0xF
	if ex.dr6Bits&amd64.DR6BS != 0 {
		d.dr6 |= amd64.DR6BS
	}
	thread, err := t.currentThread(ctx, cpu)
	if err != nil {
		t.log.Debug("current thread unknown", "cpu", cpu, "err", err)
		thread = 0
	}
	u := &kdproto.Exception64{
		ExceptionCode: ex.code, ExceptionAddress: r.RIP, NumberParameters: ex.params, FirstChance: 1,
	}
	sc := &kdproto.StateChange{
		NewState: kdproto.StateChangeException, ProcessorLevel: processorLevel, Processor: uint16(cpu),
		NumberProcessors: uint32(t.m.CPUCount()), Thread: thread, ProgramCounter: r.RIP, U: u,
	}
	// Guest memory is never modified (emulator breakpoints), so the stream at PC is what the guest holds:
	// there are no breakpoint bytes to hide.
	var stream [16]byte
	n, _ := t.readVirtual(ctx, cpu, r.RIP, stream[:])
	ctxRec := contextFromRegisters(&r, d)
	cr := &sc.ControlReport
	cr.Dr6, cr.Dr7 = d.dr6, d.dr7
	cr.EFlags = ctxRec.EFlags
	cr.InstructionCount = uint16(n)
	cr.InstructionStream = stream
	cr.ReportFlags = kdproto.ReportIncludesSegs
	if ctxRec.SegCs == kernelCS {
		cr.ReportFlags |= kdproto.ReportStandardCS
	}
	cr.SegCs, cr.SegDs, cr.SegEs, cr.SegFs = ctxRec.SegCs, ctxRec.SegDs, ctxRec.SegEs, ctxRec.SegFs
	return sc, nil
}

// Continue implements kdproto.Target.
func (t *Target) Continue(ctx context.Context, c kdproto.ContinueRequest) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.SetDr7 {
		for i := range t.dr {
			t.dr[i].dr7 = c.Dr7 | dr7Reset
		}
		if err := t.syncHardware(ctx); err != nil {
			t.log.Warn("hardware breakpoints", "err", err)
		}
	}
	for i := range t.dr {
		t.dr[i].dr6 = dr6Reset
	}
	trace := c.TraceFlag || t.traceNextStep
	t.traceNextStep = false
	t.pending, t.queued = nil, nil
	t.invalidate()
	t.drainEvents()
	if trace {
		cpu := t.current
		ev, err := t.stepRange(ctx, cpu, c)
		if err != nil {
			return err
		}
		if ev.Reason != StopWatchpoint && ev.Reason != StopBreakpoint {
			ev.Reason = StopStep
		}
		ev.CPU = cpu
		sc, err := t.onStop(ctx, ev)
		if err != nil {
			return err
		}
		t.queued = sc
		return nil
	}
	t.running = true
	if err := t.m.Continue(ctx); err != nil {
		t.running = false
		return fmt.Errorf("resume the guest: %w", err)
	}
	return nil
}

// maxRangeSteps bounds the silent steps of one Continue2 step-over range (guest code decides how long the
// range takes to leave).
const maxRangeSteps = 4096

// stepRange single-steps cpu; with a Continue2 step range [SymbolStart, SymbolEnd) (SymbolStart != 1) it keeps
// stepping without reporting while the PC stays inside, as the kernel does to spare the debugger round trips.
// Callers hold t.mu.
func (t *Target) stepRange(ctx context.Context, cpu int, c kdproto.ContinueRequest) (Stop, error) {
	ranged := c.SymbolStart != 1 && c.SymbolEnd > c.SymbolStart
	for i := 0; ; i++ {
		ev, err := t.m.Step(ctx, cpu)
		if err != nil {
			return Stop{}, fmt.Errorf("single-step cpu %d: %w", cpu, err)
		}
		if ev.Reason == StopGone {
			return Stop{}, fmt.Errorf("single-step cpu %d: %w: %v", cpu, ErrGone, ev.Err)
		}
		if !ranged || ev.Reason == StopWatchpoint || i+1 >= maxRangeSteps {
			return ev, nil
		}
		delete(t.regs, cpu)
		r, err := t.registers(ctx, cpu)
		if err != nil {
			return Stop{}, err
		}
		if r.RIP < c.SymbolStart || r.RIP >= c.SymbolEnd || t.bpRefs[r.RIP] != 0 {
			return ev, nil
		}
	}
}

// drainEvents drops stop events left over from before this resume (a Stop that raced a breakpoint), so they
// are not mistaken for the next stop. Callers hold t.mu.
func (t *Target) drainEvents() {
	for {
		select {
		case ev, ok := <-t.m.Events():
			if !ok {
				return
			}
			if ev.Reason == StopReset {
				t.rediscover = true
			}
		default:
			return
		}
	}
}

// SwitchProcessor implements kdproto.Target: the new CPU reports a breakpoint-style stop at its PC, as
// Windows kernels do.
func (t *Target) SwitchProcessor(ctx context.Context, cpu int) (*kdproto.StateChange, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkCPU(cpu); err != nil {
		return nil, err
	}
	t.current = cpu
	sc, err := t.stateChange(ctx, cpu, exception{code: kdproto.StatusBreakpoint, params: 1})
	if err != nil {
		return nil, err
	}
	t.pending = sc
	return sc, nil
}

// CurrentProcessor is the CPU the debugger talks to.
func (t *Target) CurrentProcessor() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.current
}
