// Package machine defines the abstract inputs of Windows introspection: guest-physical memory, guest-virtual
// memory and frozen or live per-CPU register state.
//
// The interfaces live here, with their consumer, so that a live QEMU machine, a raw memory image and a crash dump
// can all stand behind them without the windows packages knowing which one they talk to.
package machine

import (
	"context"
	"errors"
	"fmt"

	"github.com/kdstub/kdstub/internal/amd64"
)

// PhysicalMemory reads guest-physical memory. A read that cannot be satisfied in full returns an error.
type PhysicalMemory interface {
	ReadPhysical(ctx context.Context, pa uint64, buf []byte) error
}

// VirtualMemory reads guest-virtual memory in one address space. The paging translator provides it over
// PhysicalMemory; a triage dump provides it directly from its VA-addressed data blocks.
type VirtualMemory interface {
	ReadVirtual(ctx context.Context, va uint64, buf []byte) error
}

// CPUState gives per-CPU architectural registers.
type CPUState interface {
	CPUCount() int
	Registers(ctx context.Context, cpu int) (amd64.Registers, error)
}

// ErrOutOfRange reports a physical read past the end of the memory source.
var ErrOutOfRange = errors.New("physical address out of range")

// StaticCPUs is a frozen register state, for memory images whose registers were saved beside them.
type StaticCPUs []amd64.Registers

// CPUCount implements CPUState.
func (s StaticCPUs) CPUCount() int { return len(s) }

// Registers implements CPUState.
func (s StaticCPUs) Registers(_ context.Context, cpu int) (amd64.Registers, error) {
	if cpu < 0 || cpu >= len(s) {
		return amd64.Registers{}, fmt.Errorf("cpu %d: only %d CPUs", cpu, len(s))
	}
	return s[cpu], nil
}
