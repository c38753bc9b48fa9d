package qemumachine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/windows/target"
)

// Reconnecting is a target.Machine that outlives QEMU: when the machine goes away (QEMU exited or was
// restarted) it reconnects to the same endpoints with backoff, re-arms the emulator breakpoints the target set,
// and reports a StopReset so the target rediscovers the kernel; the KD session above it goes on. Calls made
// while no QEMU is connected fail with qemuqmp.ErrGone.
type Reconnecting struct {
	connect func(context.Context) (*qemuqmp.Machine, error)
	log     *slog.Logger
	resume  bool
	cpus    int // CPU count of the first machine; a reconnect must find the same

	mu  sync.Mutex
	m   *qemuqmp.Machine
	bps map[target.Breakpoint]int // armed emulator breakpoints (refcounted as the target adds them)

	events chan target.Stop
	done   chan struct{}
}

// Backoff of reconnection attempts.
const (
	reconnectFirst = 100 * time.Millisecond
	reconnectMax   = 5 * time.Second
)

var (
	_ target.Machine = (*Reconnecting)(nil)
	_ target.PortIO  = (*Reconnecting)(nil)
)

// NewReconnecting connects once (an error is returned as is) and keeps reconnecting with connect until ctx
// ends. With resume, a guest found stopped after a reconnect (connecting the gdbstub stops it) is resumed.
func NewReconnecting(ctx context.Context, connect func(context.Context) (*qemuqmp.Machine, error), resume bool, lg *slog.Logger) (*Reconnecting, error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	m, err := connect(ctx)
	if err != nil {
		return nil, err
	}
	r := &Reconnecting{connect: connect, log: lg, resume: resume, cpus: m.CPUCount(), m: m, bps: map[target.Breakpoint]int{},
		events: make(chan target.Stop, 16), done: make(chan struct{})}
	go r.pump(ctx)
	return r, nil
}

// Current returns the machine in use (it changes after a reconnect).
func (r *Reconnecting) Current() *qemuqmp.Machine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m
}

// Close closes the current machine. Cancel the context given to NewReconnecting first: a reconnect in progress
// only ends with it.
func (r *Reconnecting) Close() error {
	r.mu.Lock()
	m := r.m
	r.mu.Unlock()
	err := m.Close()
	<-r.done
	return err
}

// pump forwards the current machine's events and replaces the machine when it is gone.
func (r *Reconnecting) pump(ctx context.Context) {
	defer close(r.done)
	defer close(r.events)
	for {
		m := r.Current()
		var gone error
		for ev := range m.Events() {
			if ev.Reason == qemuqmp.StopGone {
				gone = ev.Err
				break
			}
			if ev.Reason == qemuqmp.StopShutdown {
				r.log.Info("guest requested shutdown; waiting for QEMU to come back if it exits")
				continue
			}
			if !r.send(ctx, convert(ev)) {
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case <-m.Done():
		default:
			return // closed by Close, not gone
		}
		r.log.Info("qemu is gone; reconnecting", "err", gone)
		nm, err := r.reconnect(ctx)
		if err != nil {
			r.log.Info("reconnect abandoned", "err", err)
			r.send(ctx, target.Stop{Reason: target.StopGone, CPU: -1, Err: fmt.Errorf("%w (reconnect: %v)", gone, err)})
			return
		}
		if !r.send(ctx, target.Stop{Reason: target.StopReset, CPU: -1}) {
			nm.Close()
			return
		}
	}
}

func (r *Reconnecting) send(ctx context.Context, ev target.Stop) bool {
	select {
	case r.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// reconnect dials until it succeeds or ctx ends, then re-arms breakpoints and resumes as configured.
func (r *Reconnecting) reconnect(ctx context.Context) (*qemuqmp.Machine, error) {
	wait := reconnectFirst
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := r.connect(actx)
		cancel()
		if err == nil && m.CPUCount() != r.cpus {
			// The target sized its per-CPU state for the first QEMU; a different -smp is a different machine.
			err = fmt.Errorf("qemu has %d CPUs, the session started with %d", m.CPUCount(), r.cpus)
			m.Close()
			r.log.Warn("reconnect refused", "err", err)
		}
		if err == nil {
			r.mu.Lock()
			r.m = m
			bps := make([]target.Breakpoint, 0, len(r.bps))
			for bp := range r.bps {
				bps = append(bps, bp)
			}
			r.mu.Unlock()
			for _, bp := range bps {
				if b, err := toQEMU(bp); err == nil {
					if err := m.AddBreakpoint(ctx, b); err != nil {
						r.log.Warn("re-arm breakpoint after reconnect", "bp", bp, "err", err)
					}
				}
			}
			if r.resume && !m.Running() {
				if err := m.Continue(ctx); err != nil {
					r.log.Warn("resume the guest after reconnect", "err", err)
				}
			}
			r.log.Info("reconnected to qemu", "attempts", attempt, "cpus", m.CPUCount(), "breakpoints", len(bps))
			return m, nil
		}
		r.log.Debug("reconnect to qemu", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, reconnectMax)
	}
}

func (r *Reconnecting) CPUCount() int { return r.Current().CPUCount() }
func (r *Reconnecting) Running() bool { return r.Current().Running() }

func (r *Reconnecting) Registers(ctx context.Context, cpu int) (amd64.Registers, error) {
	return r.Current().Registers(ctx, cpu)
}

func (r *Reconnecting) SetRegisters(ctx context.Context, cpu int, regs amd64.Registers, which amd64.Groups) error {
	return r.Current().SetRegisters(ctx, cpu, regs, which)
}

func (r *Reconnecting) ReadPhysical(ctx context.Context, pa uint64, buf []byte) error {
	return r.Current().ReadPhysical(ctx, pa, buf)
}

func (r *Reconnecting) WritePhysical(ctx context.Context, pa uint64, buf []byte) error {
	return r.Current().WritePhysical(ctx, pa, buf)
}

func (r *Reconnecting) Stop(ctx context.Context) (target.Stop, error) {
	return New(r.Current()).Stop(ctx)
}

func (r *Reconnecting) Continue(ctx context.Context) error { return r.Current().Continue(ctx) }

func (r *Reconnecting) Step(ctx context.Context, cpu int) (target.Stop, error) {
	return New(r.Current()).Step(ctx, cpu)
}

func (r *Reconnecting) AddBreakpoint(ctx context.Context, bp target.Breakpoint) error {
	if err := New(r.Current()).AddBreakpoint(ctx, bp); err != nil {
		return err
	}
	r.mu.Lock()
	r.bps[bp]++
	r.mu.Unlock()
	return nil
}

func (r *Reconnecting) RemoveBreakpoint(ctx context.Context, bp target.Breakpoint) error {
	r.mu.Lock()
	if r.bps[bp] > 1 {
		r.bps[bp]--
	} else {
		delete(r.bps, bp)
	}
	r.mu.Unlock()
	err := New(r.Current()).RemoveBreakpoint(ctx, bp)
	if errors.Is(err, qemuqmp.ErrGone) {
		return nil // nothing is armed in a QEMU that is gone, and it will not be re-armed
	}
	return err
}

// Events delivers the stops of whichever machine is current; a reconnect shows up as StopReset, and StopGone
// comes only when reconnecting was given up (ctx ended).
func (r *Reconnecting) Events() <-chan target.Stop { return r.events }

func (r *Reconnecting) InPort(ctx context.Context, port uint16, size int) (uint32, error) {
	return r.Current().ReadPort(ctx, port, size)
}

func (r *Reconnecting) OutPort(ctx context.Context, port uint16, size int, value uint32) error {
	return r.Current().WritePort(ctx, port, size, value)
}
