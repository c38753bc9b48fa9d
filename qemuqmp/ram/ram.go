// Package ram provides guest-physical memory access backends over a running QEMU: the gdbstub (always there,
// slow), QMP pmemsave (bulk reads through a file) and a shared mapping of a memory-backend-file (fastest,
// live). They share one shape so the Machine can pick the fastest that works for each request.
package ram

import (
	"context"
	"errors"
)

// Backend reads and writes guest-physical memory. These exact signatures are what the windows package consumes.
type Backend interface {
	ReadPhysical(ctx context.Context, pa uint64, buf []byte) error
	WritePhysical(ctx context.Context, pa uint64, buf []byte) error
}

// Errors shared by the backends.
var (
	// ErrNotBacked means the address is not RAM of the shared file (ROM, MMIO or unassigned space);
	// another backend can still serve it.
	ErrNotBacked = errors.New("ram: address not backed by the shared RAM file")
	// ErrReadOnly means the backend cannot write (pmemsave only reads).
	ErrReadOnly = errors.New("ram: backend is read-only")
)
