// Package qemumachine adapts a live qemuqmp.Machine to the Machine the KD target semantics consume, so that
// windows/target itself depends on no emulator and qemuqmp knows nothing of Windows.
package qemumachine

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/windows/target"
)

// Adapter is a target.Machine (and target.PortIO) over a qemuqmp.Machine.
type Adapter struct {
	M *qemuqmp.Machine

	once   sync.Once
	events chan target.Stop
}

var (
	_ target.Machine = (*Adapter)(nil)
	_ target.PortIO  = (*Adapter)(nil)
)

// New wraps m.
func New(m *qemuqmp.Machine) *Adapter { return &Adapter{M: m} }

func (a *Adapter) CPUCount() int { return a.M.CPUCount() }
func (a *Adapter) Running() bool { return a.M.Running() }

func (a *Adapter) Registers(ctx context.Context, cpu int) (amd64.Registers, error) {
	return a.M.Registers(ctx, cpu)
}

func (a *Adapter) SetRegisters(ctx context.Context, cpu int, r amd64.Registers, which amd64.Groups) error {
	return a.M.SetRegisters(ctx, cpu, r, which)
}

func (a *Adapter) ReadPhysical(ctx context.Context, pa uint64, buf []byte) error {
	return a.M.ReadPhysical(ctx, pa, buf)
}

func (a *Adapter) WritePhysical(ctx context.Context, pa uint64, buf []byte) error {
	return a.M.WritePhysical(ctx, pa, buf)
}

func (a *Adapter) Stop(ctx context.Context) (target.Stop, error) {
	ev, err := a.M.Halt(ctx)
	if err != nil {
		return target.Stop{}, err
	}
	return convert(ev), nil
}

func (a *Adapter) Continue(ctx context.Context) error { return a.M.Continue(ctx) }

func (a *Adapter) Step(ctx context.Context, cpu int) (target.Stop, error) {
	ev, err := a.M.Step(ctx, cpu)
	if err != nil {
		return target.Stop{}, err
	}
	return convert(ev), nil
}

func (a *Adapter) AddBreakpoint(ctx context.Context, bp target.Breakpoint) error {
	b, err := toQEMU(bp)
	if err != nil {
		return err
	}
	return a.M.AddBreakpoint(ctx, b)
}

func (a *Adapter) RemoveBreakpoint(ctx context.Context, bp target.Breakpoint) error {
	b, err := toQEMU(bp)
	if err != nil {
		return err
	}
	return a.M.RemoveBreakpoint(ctx, b)
}

// Events converts the machine's stop events; the channel closes when the machine's does.
func (a *Adapter) Events() <-chan target.Stop {
	a.once.Do(func() {
		a.events = make(chan target.Stop, 16)
		go func() {
			defer close(a.events)
			for ev := range a.M.Events() {
				a.events <- convert(ev)
			}
		}()
	})
	return a.events
}

func (a *Adapter) InPort(ctx context.Context, port uint16, size int) (uint32, error) {
	return a.M.ReadPort(ctx, port, size)
}

func (a *Adapter) OutPort(ctx context.Context, port uint16, size int, value uint32) error {
	return a.M.WritePort(ctx, port, size, value)
}

func toQEMU(bp target.Breakpoint) (qemuqmp.Breakpoint, error) {
	if bp.Len > 1<<30 {
		return qemuqmp.Breakpoint{}, fmt.Errorf("breakpoint length %#x too large", bp.Len)
	}
	var k qemuqmp.BreakpointKind
	switch bp.Kind {
	case target.Software:
		k = qemuqmp.Software
	case target.Hardware:
		k = qemuqmp.Hardware
	case target.WatchWrite:
		k = qemuqmp.WatchWrite
	case target.WatchRead:
		k = qemuqmp.WatchRead
	case target.WatchAccess:
		k = qemuqmp.WatchAccess
	default:
		return qemuqmp.Breakpoint{}, fmt.Errorf("breakpoint kind %v", bp.Kind)
	}
	return qemuqmp.Breakpoint{Kind: k, Addr: bp.Addr, Len: int(bp.Len)}, nil
}

func convert(ev qemuqmp.StopEvent) target.Stop {
	s := target.Stop{CPU: ev.CPU, WatchAddr: ev.WatchAddr, Err: ev.Err}
	switch ev.Reason {
	case qemuqmp.StopBreakpoint:
		s.Reason = target.StopBreakpoint
	case qemuqmp.StopWatchpoint:
		s.Reason = target.StopWatchpoint
	case qemuqmp.StopStep:
		s.Reason = target.StopStep
	case qemuqmp.StopInterrupted:
		s.Reason = target.StopInterrupted
	case qemuqmp.StopReset:
		s.Reason = target.StopReset
	case qemuqmp.StopShutdown:
		s.Reason, s.Err = target.StopGone, errors.New("guest shut down")
	case qemuqmp.StopGone:
		s.Reason = target.StopGone
	default:
		s.Reason = target.StopInterrupted
	}
	return s
}
