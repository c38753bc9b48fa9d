package qemuqmp

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kdstub/kdstub/qemuqmp/internal/backlog"
	"github.com/kdstub/kdstub/qemuqmp/rsp"
)

// StopReason says why the VM stopped (or what else happened to it).
type StopReason int

// Stop reasons.
const (
	StopBreakpoint  StopReason = iota + 1 // an execution breakpoint (Software or Hardware)
	StopWatchpoint                        // a data watchpoint; reported after the accessing instruction
	StopStep                              // a single step completed
	StopInterrupted                       // Stop, a QMP stop, a replay break, or a stop on attach
	StopReset                             // the machine was reset (it keeps its run state)
	StopShutdown                          // the guest or host requested shutdown
	StopGone                              // QEMU exited or a connection broke; nothing works any more
)

func (r StopReason) String() string {
	switch r {
	case StopBreakpoint:
		return "breakpoint"
	case StopWatchpoint:
		return "watchpoint"
	case StopStep:
		return "step"
	case StopInterrupted:
		return "interrupted"
	case StopReset:
		return "reset"
	case StopShutdown:
		return "shutdown"
	case StopGone:
		return "gone"
	}
	return fmt.Sprintf("StopReason(%d)", int(r))
}

// StopEvent is one entry of Machine.Events.
type StopEvent struct {
	Reason    StopReason
	CPU       int    // vCPU that reported the stop; -1 when not CPU-specific
	PC        uint64 // RIP of that CPU at the stop (0 when it could not be read)
	WatchAddr uint64 // for StopWatchpoint: the watched address QEMU reported
	WatchKind BreakpointKind
	Signal    int    // gdb signal (2 interrupt, 5 trap)
	Raw       string // the gdb stop reply or QMP event name, for logs
	Err       error  // for StopGone: why
}

// eventQueue decouples the event producers (the QMP and gdbstub readers) from a slow or absent consumer.
type eventQueue struct {
	*backlog.Queue[StopEvent]
	done chan struct{}
	once sync.Once
}

const maxQueuedStops = 1024

func newEventQueue() *eventQueue {
	done := make(chan struct{})
	return &eventQueue{Queue: backlog.New[StopEvent](maxQueuedStops, 16, done, nil), done: done}
}

func (e *eventQueue) push(ev StopEvent) { e.Push(ev) }

func (e *eventQueue) close() { e.once.Do(func() { close(e.done) }) }

// loop turns gdbstub stop replies and QMP events into StopEvents and keeps the run state right.
func (m *Machine) loop() {
	defer close(m.loopEnd)
	qev := m.qmp.Events()
	for {
		select {
		case <-m.closing:
			return
		case sr := <-m.gdb.Stops():
			m.onStop(sr)
		case <-m.gdb.Done():
			m.setGone(m.gdb.Err())
			return
		case ev, ok := <-qev:
			if !ok {
				m.setGone(m.qmp.Err())
				return
			}
			m.onQMPEvent(ev.Name)
		}
	}
}

func (m *Machine) onQMPEvent(name string) {
	switch name {
	case "RESUME":
		// Possibly a cont the gdbstub never hears about; confirm with query-status under the gdbstub's
		// request lock so a step of ours in flight is not mistaken for it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.gdb.Reconcile(ctx, m.qmp.Running); err != nil {
			m.log.Debug("reconcile run state", "err", err)
		}
	case "RESET":
		m.events.push(StopEvent{Reason: StopReset, CPU: -1, Raw: name})
	case "SHUTDOWN":
		m.events.push(StopEvent{Reason: StopShutdown, CPU: -1, Raw: name})
	}
}

func (m *Machine) onStop(sr rsp.StopReply) {
	if sr.Exited() {
		m.setGone(fmt.Errorf("gdbstub reports the target exited (%s)", sr.Raw))
		return
	}
	ev := m.describeStop(sr)
	m.mu.Lock()
	if ev.CPU >= 0 {
		m.lastCPU = ev.CPU
	}
	claimed := len(m.halters) > 0
	for h := range m.halters {
		select {
		case h <- ev:
		default:
		}
	}
	m.mu.Unlock()
	if !claimed {
		m.events.push(ev) // nobody's Halt asked for this stop
	}
}

// describeStop classifies a stop reply and reads the stopped CPU's PC.
func (m *Machine) describeStop(sr rsp.StopReply) StopEvent {
	ev := StopEvent{CPU: -1, Signal: int(sr.Signal), Raw: sr.Raw, WatchAddr: sr.WatchAddr}
	if sr.HasThread {
		ev.CPU = m.cpuOf(sr.Thread)
	}
	if ev.CPU < 0 {
		m.mu.Lock()
		ev.CPU = m.lastCPU
		m.mu.Unlock()
	}
	if t, err := m.thread(ev.CPU); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if pc, err := m.readPC(ctx, t); err == nil {
			ev.PC = pc
		} else {
			m.log.Debug("read PC after stop", "cpu", ev.CPU, "err", err)
		}
		cancel()
	}
	switch {
	case sr.Signal == rsp.SigInt:
		ev.Reason = StopInterrupted
	case sr.Watch != rsp.NoWatch:
		ev.Reason = StopWatchpoint
		ev.WatchKind = map[rsp.WatchKind]BreakpointKind{rsp.WatchWrite: WatchWrite, rsp.WatchRead: WatchRead, rsp.WatchAccess: WatchAccess}[sr.Watch]
	default:
		ev.Reason = StopBreakpoint
	}
	return ev
}

// Stop interrupts a running VM and returns once it is stopped. The stop it causes (or the breakpoint that beat
// it) is not queued on Events: it is the caller's, returned by Halt. A no-op on a stopped VM.
func (m *Machine) Stop(ctx context.Context) error {
	_, err := m.Halt(ctx)
	return err
}

// Stop polling: after a QMP stop, Halt waits this long for the gdbstub's stop reply before asking QEMU
// (query-status) what happened, doubling up to stopPollMax.
const (
	stopPollFirst = 5 * time.Millisecond
	stopPollMax   = 100 * time.Millisecond
	// stopSettlePolls consecutive "stopped" answers without a stop reply (5+10+20+40+80 ms ≈ 155 ms) prove
	// that none is coming: a gdbstub "c" still in flight would have run the VM by then.
	stopSettlePolls = 5
)

// Halt stops a running VM and returns the stop: StopInterrupted, or the breakpoint, watchpoint or step that
// stopped it first. The returned stop is never also queued on Events (stops nobody asked for are). On a
// VM that is already stopped it returns StopInterrupted for the CPU that stopped last.
//
// It never waits unboundedly for a wake-up that may not come: a QMP stop that reaches QEMU while the VM is
// stopped (a breakpoint raced it, or the gdbstub's "c" is handled after the QMP stop, since the two travel on
// different sockets) produces neither an event nor a stop reply. So Halt polls query-status with backoff:
// running → stop again; stopped for several polls with no stop reply → the gdbstub client's run state is
// settled to stopped.
func (m *Machine) Halt(ctx context.Context) (StopEvent, error) {
	if err := m.alive(); err != nil {
		return StopEvent{}, err
	}
	if err := m.gdb.Reconcile(ctx, m.qmp.Running); err != nil {
		return StopEvent{}, m.wrap(err)
	}
	claim := make(chan StopEvent, 1)
	m.mu.Lock()
	m.halters[claim] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.halters, claim)
		m.mu.Unlock()
	}()
	wait, quiet := stopPollFirst, 0
	send := true
	for {
		select {
		case ev := <-claim:
			return ev, nil
		default:
		}
		if !m.gdb.Running() {
			return m.stoppedEvent(ctx), nil
		}
		if send {
			// QMP stop rather than the gdb break-in: QEMU ignores 0x03 after a QMP cont (the gdbstub does not
			// know the VM runs), while a QMP stop of a running VM is always reported to the gdbstub as T02.
			if err := m.qmp.Stop(ctx); err != nil {
				return StopEvent{}, m.wrap(err)
			}
			send = false
		}
		timer := time.NewTimer(wait)
		select {
		case ev := <-claim:
			timer.Stop()
			return ev, nil
		case <-m.gone:
			timer.Stop()
			return StopEvent{}, m.alive()
		case <-ctx.Done():
			timer.Stop()
			return StopEvent{}, fmt.Errorf("stop: waiting for the VM to stop: %w", ctx.Err())
		case <-timer.C:
		}
		wait = min(2*wait, stopPollMax)
		run, err := m.qmp.Running(ctx)
		if err != nil {
			return StopEvent{}, m.wrap(fmt.Errorf("stop: query-status: %w", err))
		}
		if run {
			// Our stop was a no-op on a VM that was resumed right after it: stop again.
			m.log.Debug("stop: the VM still runs; stopping again")
			quiet, send = 0, true
			continue
		}
		if quiet++; quiet < stopSettlePolls {
			continue
		}
		settled, err := m.gdb.SettleStopped(ctx, m.qmp.Running)
		if err != nil {
			return StopEvent{}, m.wrap(err)
		}
		if settled {
			m.log.Debug("stop: VM stopped without a stop reply; run state settled")
		}
		quiet = 0
	}
}

// stoppedEvent describes a VM found stopped without a stop reply of its own.
func (m *Machine) stoppedEvent(ctx context.Context) StopEvent {
	m.mu.Lock()
	cpu := m.lastCPU
	m.mu.Unlock()
	ev := StopEvent{Reason: StopInterrupted, CPU: cpu, Signal: int(rsp.SigInt), Raw: "stopped"}
	if t, err := m.thread(cpu); err == nil {
		if pc, err := m.readPC(ctx, t); err == nil {
			ev.PC = pc
		}
	}
	return ev
}

// Continue resumes all vCPUs. If the CPU that last stopped sits on one of our execution breakpoints, it is
// first stepped over it (remove, step, re-insert), since QEMU would otherwise report the same breakpoint again
// without executing anything. Returns at once; the next stop arrives on Events.
func (m *Machine) Continue(ctx context.Context) error {
	if err := m.alive(); err != nil {
		return err
	}
	if m.gdb.Running() {
		return nil
	}
	m.mu.Lock()
	cpu := m.lastCPU
	m.mu.Unlock()
	ev, stepped, err := m.stepOver(ctx, cpu)
	if err != nil {
		return err
	}
	if stepped && ev.Reason == StopWatchpoint {
		// The stepped instruction tripped a watchpoint: report it instead of running on.
		m.events.push(ev)
		return nil
	}
	return m.wrap(m.gdb.Continue(ctx))
}

// Step executes one instruction on cpu (the other vCPUs stay stopped, interrupts are masked) and returns
// the resulting stop: StopStep, or StopWatchpoint when the instruction tripped one. Step is synchronous and
// does not also queue an event.
func (m *Machine) Step(ctx context.Context, cpu int) (StopEvent, error) {
	if err := m.alive(); err != nil {
		return StopEvent{}, err
	}
	ev, stepped, err := m.stepOver(ctx, cpu)
	if err != nil || stepped {
		return ev, err
	}
	t, err := m.thread(cpu)
	if err != nil {
		return StopEvent{}, err
	}
	sr, err := m.gdb.Step(ctx, t)
	if err != nil {
		return StopEvent{}, m.wrap(err)
	}
	return m.stepEvent(ctx, cpu, sr), nil
}

func (m *Machine) stepEvent(ctx context.Context, cpu int, sr rsp.StopReply) StopEvent {
	ev := m.describeStop(sr)
	if ev.Reason == StopBreakpoint {
		ev.Reason = StopStep
	}
	m.mu.Lock()
	if ev.CPU >= 0 {
		m.lastCPU = ev.CPU
	}
	m.mu.Unlock()
	return ev
}

func (m *Machine) readPC(ctx context.Context, t rsp.ThreadID) (uint64, error) {
	b, err := m.gdb.ReadRegister(ctx, t, "rip")
	if err != nil {
		return 0, err
	}
	return le(b), nil
}

func le(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// ReverseStep steps cpu one instruction backwards. Only in replay mode (with rrsnapshot); elsewhere it is
// refused before anything is sent, because QEMU aborts on bs outside replay.
func (m *Machine) ReverseStep(ctx context.Context, cpu int) (StopEvent, error) {
	t, err := m.thread(cpu)
	if err != nil {
		return StopEvent{}, err
	}
	if err := m.alive(); err != nil {
		return StopEvent{}, err
	}
	sr, err := m.gdb.ReverseStep(ctx, t)
	if err != nil {
		return StopEvent{}, m.wrap(err)
	}
	return m.stepEvent(ctx, cpu, sr), nil
}

// ReverseContinue runs backwards to the previous breakpoint hit (replay mode only); the stop arrives on Events.
func (m *Machine) ReverseContinue(ctx context.Context) error {
	if err := m.alive(); err != nil {
		return err
	}
	return m.wrap(m.gdb.ReverseContinue(ctx))
}
