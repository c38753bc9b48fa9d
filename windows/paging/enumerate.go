package paging

import (
	"context"
	"encoding/binary"
	"fmt"
)

// maxEnumeratedTables bounds how many page tables one Enumerate call reads; hostile tables could otherwise make
// a walk over a large window arbitrarily expensive.
const maxEnumeratedTables = 4096

// Enumerate calls fn for every present leaf mapping (4 KiB, 2 MiB or 1 GiB) that intersects [start, end), in
// ascending VA order, until fn returns false. Only long-mode address spaces are supported: it exists for the
// no-CPU-state kernel search, which walks System's tables over the kernel image window.
func (as *AddressSpace) Enumerate(ctx context.Context, start, end uint64, fn func(va, pa, size uint64) bool) error {
	if as.mode != ModeX64 && as.mode != ModeX64LA57 {
		return fmt.Errorf("enumerate mappings: unsupported paging mode %s", as.mode)
	}
	e := enumerator{as: as, start: start, end: end, fn: fn}
	_, err := e.table(ctx, as.dtb, int(as.mode), 0)
	return err
}

type enumerator struct {
	as         *AddressSpace
	start, end uint64
	fn         func(va, pa, size uint64) bool
	tables     int
	buf        [4096]byte
	decoded    map[uint64]*[512]uint64 // tables already read in this call (self-maps revisit them)
}

func signExtend(va uint64, mode Mode) uint64 {
	bits := uint(48)
	if mode == ModeX64LA57 {
		bits = 57
	}
	return uint64(int64(va<<(64-bits)) >> (64 - bits))
}

// table walks one table; it returns false when fn asked to stop.
func (e *enumerator) table(ctx context.Context, pa uint64, level int, prefix uint64) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	e.tables++
	if e.tables > maxEnumeratedTables {
		return false, fmt.Errorf("enumerate mappings: more than %d page tables", maxEnumeratedTables)
	}
	entries, ok := e.decoded[pa]
	if !ok {
		if err := e.as.mem.ReadPhysical(ctx, pa, e.buf[:]); err != nil {
			return true, nil // an unreadable table maps nothing we can read
		}
		entries = new([512]uint64)
		for i := range entries {
			entries[i] = binary.LittleEndian.Uint64(e.buf[i*8:])
		}
		if e.decoded == nil {
			e.decoded = map[uint64]*[512]uint64{}
		}
		e.decoded[pa] = entries
	}
	shift := uint(12 + 9*(level-1))
	span := uint64(1) << shift
	for i, ent := range entries {
		va := signExtend(prefix|uint64(i)<<shift, e.as.mode)
		if va+span-1 < e.start || va >= e.end {
			continue
		}
		if ent&ptePresent == 0 {
			continue
		}
		if level == 1 || (ent&pteLarge != 0 && (level == 2 || level == 3)) {
			if !e.fn(va, ent&frameMask64&^(span-1), span) {
				return false, nil
			}
			continue
		}
		more, err := e.table(ctx, ent&frameMask64, level-1, prefix|uint64(i)<<shift)
		if err != nil || !more {
			return more, err
		}
	}
	return true, nil
}
