package qemuqmp

import (
	"context"
	"fmt"

	"github.com/kdstub/kdstub/qemuqmp/rsp"
)

// BreakpointKind selects an emulator-side breakpoint or watchpoint.
type BreakpointKind int

// Breakpoint kinds. Under TCG all of them live in the emulator: guest memory and debug registers are untouched.
const (
	Software    BreakpointKind = iota + 1 // Z0
	Hardware                              // Z1
	WatchWrite                            // Z2
	WatchRead                             // Z3
	WatchAccess                           // Z4
)

func (k BreakpointKind) z() (int, error) {
	switch k {
	case Software:
		return rsp.ZSoftware, nil
	case Hardware:
		return rsp.ZHardware, nil
	case WatchWrite:
		return rsp.ZWrite, nil
	case WatchRead:
		return rsp.ZRead, nil
	case WatchAccess:
		return rsp.ZAccess, nil
	}
	return 0, fmt.Errorf("breakpoint kind %d", int(k))
}

func (k BreakpointKind) exec() bool { return k == Software || k == Hardware }

// Breakpoint is one breakpoint or watchpoint at a guest-virtual address. Len is the watched length (1 for
// execution breakpoints; 0 means 1).
type Breakpoint struct {
	Kind BreakpointKind
	Addr uint64
	Len  int
}

func (b Breakpoint) norm() Breakpoint {
	if b.Len <= 0 {
		b.Len = 1
	}
	return b
}

// AddBreakpoint inserts a breakpoint or watchpoint. The VM must be stopped: a packet sent while it runs would
// only stop it and be dropped. Under KVM, Software breakpoints are refused unless allowed by the Config.
func (m *Machine) AddBreakpoint(ctx context.Context, b Breakpoint) error {
	b = b.norm()
	z, err := b.Kind.z()
	if err != nil {
		return err
	}
	if b.Kind == Software && m.kvm && !m.cfg.AllowKVMSoftwareBreakpoints {
		return fmt.Errorf("breakpoint at %#x: %w", b.Addr, ErrKVMSoftwareBreakpoint)
	}
	if err := m.alive(); err != nil {
		return err
	}
	if err := m.gdb.InsertBreakpoint(ctx, z, b.Addr, b.Len); err != nil {
		return m.wrap(fmt.Errorf("insert breakpoint %+v: %w", b, err))
	}
	m.mu.Lock()
	m.bps[b] = true
	m.mu.Unlock()
	return nil
}

// RemoveBreakpoint removes a breakpoint added with AddBreakpoint.
func (m *Machine) RemoveBreakpoint(ctx context.Context, b Breakpoint) error {
	b = b.norm()
	z, err := b.Kind.z()
	if err != nil {
		return err
	}
	if err := m.alive(); err != nil {
		return err
	}
	if err := m.gdb.RemoveBreakpoint(ctx, z, b.Addr, b.Len); err != nil {
		return m.wrap(fmt.Errorf("remove breakpoint %+v: %w", b, err))
	}
	m.mu.Lock()
	delete(m.bps, b)
	m.mu.Unlock()
	return nil
}

// Breakpoints lists the inserted breakpoints.
func (m *Machine) Breakpoints() []Breakpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Breakpoint, 0, len(m.bps))
	for b := range m.bps {
		out = append(out, b)
	}
	return out
}

// stepOver steps cpu past an execution breakpoint at its PC, if there is one: remove, step, re-insert. It
// reports whether it stepped, and the step's stop.
func (m *Machine) stepOver(ctx context.Context, cpu int) (StopEvent, bool, error) {
	t, err := m.thread(cpu)
	if err != nil {
		return StopEvent{}, false, err
	}
	m.mu.Lock()
	var execs []Breakpoint
	for b := range m.bps {
		if b.Kind.exec() {
			execs = append(execs, b)
		}
	}
	m.mu.Unlock()
	if len(execs) == 0 {
		return StopEvent{}, false, nil
	}
	pc, err := m.readPC(ctx, t)
	if err != nil {
		return StopEvent{}, false, m.wrap(fmt.Errorf("read PC of cpu %d: %w", cpu, err))
	}
	var here []Breakpoint
	for _, b := range execs {
		if b.Addr == pc {
			here = append(here, b)
		}
	}
	if len(here) == 0 {
		return StopEvent{}, false, nil
	}
	for _, b := range here {
		z, _ := b.Kind.z()
		if err := m.gdb.RemoveBreakpoint(ctx, z, b.Addr, b.Len); err != nil {
			return StopEvent{}, false, m.wrap(fmt.Errorf("step over %+v: remove: %w", b, err))
		}
	}
	sr, stepErr := m.gdb.Step(ctx, t)
	// Re-insert even when the step failed, so the breakpoint table stays true.
	for _, b := range here {
		z, _ := b.Kind.z()
		if err := m.gdb.InsertBreakpoint(ctx, z, b.Addr, b.Len); err != nil && stepErr == nil {
			stepErr = fmt.Errorf("step over %+v: re-insert: %w", b, err)
		}
	}
	if stepErr != nil {
		return StopEvent{}, false, m.wrap(stepErr)
	}
	return m.stepEvent(ctx, cpu, sr), true, nil
}
