// Package target gives a Windows guest the KD target semantics a debug-mode kernel has, over an abstract machine
// that never lets the guest notice: breakpoints and watchpoints live in the emulator, the KDBG is served decoded
// from a copy, and debug registers the debugger sets are shadowed instead of written into the guest.
//
// It implements kdproto.Target. The Machine it drives is defined here (its consumer); cmd/kdstub adapts the
// qemuqmp Machine to it, and tests use small in-memory machines.
package target

import (
	"context"
	"fmt"

	"github.com/kdstub/kdstub/internal/amd64"
)

// Machine is the view of the emulator the target needs: registers per CPU, physical memory, all-stop run
// control and emulator-side breakpoints. Breakpoints must not modify guest memory (TCG gdbstub Z0..Z4 do not).
type Machine interface {
	CPUCount() int
	Registers(ctx context.Context, cpu int) (amd64.Registers, error)
	// SetRegisters writes the register groups in which (only those) of cpu.
	SetRegisters(ctx context.Context, cpu int, r amd64.Registers, which amd64.Groups) error
	ReadPhysical(ctx context.Context, pa uint64, buf []byte) error
	WritePhysical(ctx context.Context, pa uint64, buf []byte) error

	// Running reports whether the guest's CPUs run (as opposed to paused by anyone).
	Running() bool
	// Stop stops all CPUs and returns the stop: StopInterrupted, or the breakpoint/watchpoint that beat the
	// break-in. That stop is returned only, never also reported on Events. It must return once the guest is
	// stopped or ctx ends, whatever races it (the caller bounds it with ctx and does not retry).
	Stop(ctx context.Context) (Stop, error)
	// Continue resumes all CPUs; the next stop is reported on Events. Stepping over an armed breakpoint at a
	// CPU's PC is the machine's business.
	Continue(ctx context.Context) error
	// Step executes one instruction on cpu (the others stay stopped) and returns the resulting stop; it is not
	// reported on Events.
	Step(ctx context.Context, cpu int) (Stop, error)
	AddBreakpoint(ctx context.Context, bp Breakpoint) error
	RemoveBreakpoint(ctx context.Context, bp Breakpoint) error
	// Events delivers stops that follow Continue (and stops nobody asked for), and guest resets.
	Events() <-chan Stop
}

// PortIO is implemented by machines that can do port I/O on the guest's behalf (QEMU HMP `i`/`o`).
type PortIO interface {
	InPort(ctx context.Context, port uint16, size int) (uint32, error)
	OutPort(ctx context.Context, port uint16, size int, value uint32) error
}

// BreakpointKind is how the emulator traps.
type BreakpointKind int

const (
	Software    BreakpointKind = iota // execution, emulator-side (gdbstub Z0)
	Hardware                          // execution, hardware-style (Z1)
	WatchWrite                        // data write (Z2)
	WatchRead                         // data read (Z3)
	WatchAccess                       // data read or write (Z4)
)

func (k BreakpointKind) String() string {
	switch k {
	case Software:
		return "software"
	case Hardware:
		return "hardware"
	case WatchWrite:
		return "watch-write"
	case WatchRead:
		return "watch-read"
	case WatchAccess:
		return "watch-access"
	}
	return fmt.Sprintf("kind%d", int(k))
}

// Breakpoint is one emulator breakpoint or watchpoint at a guest-virtual address.
type Breakpoint struct {
	Kind BreakpointKind
	Addr uint64
	Len  uint64 // watchpoints: bytes covered; execution breakpoints: 1
}

// StopReason says why the guest stopped.
type StopReason int

const (
	StopInterrupted StopReason = iota // Stop (break-in)
	StopBreakpoint                    // an execution breakpoint
	StopWatchpoint                    // a watchpoint; WatchAddr is set
	StopStep                          // a single step completed
	StopReset                         // the guest was reset (it keeps running): rediscover the kernel
	StopGone                          // the machine is gone
)

var stopReasonNames = [...]string{"interrupted", "breakpoint", "watchpoint", "step", "reset", "gone"}

func (r StopReason) String() string {
	if r >= 0 && int(r) < len(stopReasonNames) {
		return stopReasonNames[r]
	}
	return fmt.Sprintf("reason%d", int(r))
}

// Stop is one stop event.
type Stop struct {
	Reason    StopReason
	CPU       int
	WatchAddr uint64
	Err       error // StopGone: why
}
