package qemuqmp

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// Under KVM, QEMU implements Z0 by writing 0xCC into guest memory; the Machine must refuse before sending
// anything (m.gdb is nil here: any attempt to talk to QEMU would panic the test).
func TestKVMRefusesSoftwareBreakpoints(t *testing.T) {
	m := &Machine{kvm: true, gone: make(chan struct{}), bps: map[Breakpoint]bool{}}
	err := m.AddBreakpoint(context.Background(), Breakpoint{Kind: Software, Addr: 0xfffff80000100000})
	require.ErrorIs(t, err, ErrKVMSoftwareBreakpoint)
	require.Empty(t, m.bps)
}
