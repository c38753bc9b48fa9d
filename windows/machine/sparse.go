package machine

import (
	"context"
	"fmt"
)

// SparseMemory is an in-memory PhysicalMemory made of 4 KiB pages; pages never written read as absent.
//
// Tests build page tables and kernel images in it, and absent pages let them exercise the "not present"
// paths that a flat byte slice could not.
type SparseMemory struct {
	Pages map[uint64][]byte // page-aligned PA → 4096 bytes
}

// NewSparseMemory returns an empty SparseMemory.
func NewSparseMemory() *SparseMemory { return &SparseMemory{Pages: map[uint64][]byte{}} }

// Write stores data at pa, creating pages as needed.
func (m *SparseMemory) Write(pa uint64, data []byte) {
	for len(data) > 0 {
		page := pa &^ 0xFFF
		off := pa & 0xFFF
		p, ok := m.Pages[page]
		if !ok {
			p = make([]byte, 4096)
			m.Pages[page] = p
		}
		n := copy(p[off:], data)
		data = data[n:]
		pa += uint64(n)
	}
}

// ReadPhysical implements PhysicalMemory.
func (m *SparseMemory) ReadPhysical(_ context.Context, pa uint64, buf []byte) error {
	for done := 0; done < len(buf); {
		cur := pa + uint64(done)
		p, ok := m.Pages[cur&^0xFFF]
		if !ok {
			return fmt.Errorf("read %d bytes at PA %#x: %w", len(buf), pa, ErrOutOfRange)
		}
		done += copy(buf[done:], p[cur&0xFFF:])
	}
	return nil
}
