package kdproto

import (
	"context"
	"errors"
	"fmt"
)

// Target is what a Server needs from the debuggee: one method per manipulate API it answers, plus run control
// and a stream of stops. It is defined here, where it is consumed; the Windows semantics (windows/target) and
// small in-test targets implement it. Methods are called from one goroutine at a time, except Break, which may
// be called while another goroutine waits in WaitStop.
//
// Errors map to the ReturnStatus of the response: a *StatusError carries its status; ErrNotSupported (and any
// other error) becomes STATUS_UNSUCCESSFUL, which makes the debugger fall back to another method.
// Memory methods return the number of bytes done; fewer than asked is a partial transfer.
type Target interface {
	// NumberProcessors is the active CPU count reported in state changes.
	NumberProcessors() int
	// GetVersion returns DBGKD_GET_VERSION64.
	GetVersion(ctx context.Context) (*GetVersion64, error)

	// ReadVirtual reads at va in the address space of cpu.
	ReadVirtual(ctx context.Context, cpu int, va uint64, buf []byte) (int, error)
	WriteVirtual(ctx context.Context, cpu int, va uint64, data []byte) (int, error)
	ReadPhysical(ctx context.Context, pa uint64, buf []byte) (int, error)
	WritePhysical(ctx context.Context, pa uint64, data []byte) (int, error)
	// QueryMemory classifies va: space 0 user, 1 session, 2 kernel; flags 1 R | 2 W | 4 X | 8 fixed.
	QueryMemory(ctx context.Context, cpu int, va uint64) (space, flags uint32, err error)
	// SearchMemory returns the first address in [start, start+length) where pattern occurs, or ErrNotFound.
	SearchMemory(ctx context.Context, cpu int, start, length uint64, pattern []byte) (uint64, error)
	// FillMemory writes pattern repeatedly over length bytes at addr and returns the bytes written.
	FillMemory(ctx context.Context, cpu int, addr uint64, length uint32, physical bool, pattern []byte) (uint32, error)

	GetContext(ctx context.Context, cpu int) (*Context, error)
	SetContext(ctx context.Context, cpu int, c *Context) error
	// ReadControlSpace serves AMD64 control space: 0 KPCR, 1 KPRCB, 2 KSPECIAL_REGISTERS, 3 KTHREAD.
	ReadControlSpace(ctx context.Context, cpu int, addr uint64, buf []byte) (int, error)
	WriteControlSpace(ctx context.Context, cpu int, addr uint64, data []byte) (int, error)
	ReadMSR(ctx context.Context, cpu int, msr uint32) (uint64, error)
	WriteMSR(ctx context.Context, cpu int, msr uint32, value uint64) error

	ReadIoSpace(ctx context.Context, cpu int, io IoAccess) (uint32, error)
	WriteIoSpace(ctx context.Context, cpu int, io IoAccess) error
	GetBusData(ctx context.Context, bus BusAccess, buf []byte) (int, error)
	SetBusData(ctx context.Context, bus BusAccess, data []byte) (int, error)

	// WriteBreakpoint arms a breakpoint at va and returns its handle (1-based).
	WriteBreakpoint(ctx context.Context, va uint64) (uint32, error)
	// RestoreBreakpoint removes the breakpoint with that handle.
	RestoreBreakpoint(ctx context.Context, handle uint32) error

	// Continue resumes the guest (all CPUs); WaitStop then reports the next stop.
	Continue(ctx context.Context, c ContinueRequest) error
	// Break asks a running guest to stop; the stop is reported by WaitStop. On a stopped guest it makes
	// WaitStop report the current state as a break-in.
	Break(ctx context.Context) error
	// WaitStop blocks until the guest stops and returns the state change to report.
	WaitStop(ctx context.Context) (*StateChange, error)
	// SwitchProcessor makes cpu current and returns the state change reported from it.
	SwitchProcessor(ctx context.Context, cpu int) (*StateChange, error)
	// Stopped returns the pending state change when the guest is already stopped under debugger control
	// (a previous session ended while stopped), or nil when it runs.
	Stopped(ctx context.Context) (*StateChange, error)
}

// ContinueRequest carries what Continue and Continue2 ask for.
type ContinueRequest struct {
	Status    uint32 // DBG_CONTINUE, DBG_EXCEPTION_HANDLED, ...
	TraceFlag bool   // single-step the current CPU
	SetDr7    bool   // Continue2: Dr7 is meaningful and applies to all CPUs
	Dr7       uint64
	// SymbolStart/SymbolEnd is the step-over range of Continue2 (SymbolStart == 1 means none).
	SymbolStart, SymbolEnd uint64
}

// IoAccess is one port or bus I/O access (Read/WriteIoSpace and their Extended forms).
type IoAccess struct {
	Address       uint64
	Size          uint32 // 1, 2 or 4
	Value         uint32 // for writes
	InterfaceType uint32 // Extended only (1 = Isa); 0 for the plain form
	BusNumber     uint32
	AddressSpace  uint32 // Extended only (1 = I/O port space); the plain form is always port I/O
	Extended      bool
}

// BusAccess addresses Get/SetBusData (BusDataType 4 = PCI configuration space).
type BusAccess struct {
	BusDataType, BusNumber, SlotNumber, Offset uint32
}

var (
	// ErrNotSupported makes the server answer STATUS_UNSUCCESSFUL ("not supported": the debugger falls back).
	ErrNotSupported = errors.New("kdproto: not supported by the target")
	// ErrNotFound makes SearchMemory answer STATUS_NO_MORE_ENTRIES.
	ErrNotFound = errors.New("kdproto: pattern not found")
)

// StatusError makes a Target method's failure carry a specific NTSTATUS to the debugger.
type StatusError struct {
	Status uint32
	Err    error
}

func (e *StatusError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("status %#x", e.Status)
	}
	return fmt.Sprintf("status %#x: %v", e.Status, e.Err)
}

func (e *StatusError) Unwrap() error { return e.Err }

// NewStatusError wraps err with an NTSTATUS.
func NewStatusError(status uint32, err error) error { return &StatusError{Status: status, Err: err} }

// StatusOf maps a Target error to the ReturnStatus of a response.
func StatusOf(err error) uint32 {
	if err == nil {
		return StatusSuccess
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	if errors.Is(err, ErrNotFound) {
		return StatusNoMoreEntries
	}
	return StatusUnsuccessful
}
