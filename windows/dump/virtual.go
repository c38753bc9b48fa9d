package dump

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
)

// virtualMap serves the VA-tagged contents of a triage dump. The structure copies (KDBG, KPRCB, EPROCESS,
// ETHREAD, stack, data page) take precedence over data blocks where both cover an address: the KDBG copy is
// the decoded one, while a data block over the same VA would hold what memory held (possibly encoded).
type virtualMap struct {
	copies []Block // in precedence order, each with VA != 0 and no address wrap
	blocks []vseg  // sorted by va, non-overlapping
}

// vseg is a normalized data block: [va, end) at file offset fileOff.
type vseg struct {
	va, end uint64
	fileOff int64
}

// normalizeBlocks drops records outside the file or wrapping the address space, sorts them, and trims
// overlaps so that the block starting first owns the shared bytes.
func normalizeBlocks(blocks []DataBlock, size int64) []vseg {
	segs := make([]vseg, 0, len(blocks))
	for _, b := range blocks {
		end := b.VA + uint64(b.Size)
		if b.Size == 0 || end <= b.VA || uint64(b.FileOffset) < HeaderSize ||
			uint64(b.FileOffset)+uint64(b.Size) > uint64(size) {
			continue
		}
		segs = append(segs, vseg{va: b.VA, end: end, fileOff: int64(b.FileOffset)})
	}
	slices.SortStableFunc(segs, func(a, b vseg) int { return cmp.Compare(a.va, b.va) })
	out := segs[:0]
	var covered uint64
	for _, s := range segs {
		if len(out) > 0 && s.va < covered {
			if s.end <= covered {
				continue
			}
			s.fileOff += int64(covered - s.va)
			s.va = covered
		}
		out = append(out, s)
		covered = s.end
	}
	return out
}

// ReadVirtual fills buf from guest virtual address va using a triage dump's structure copies and data
// blocks. Bytes the dump does not hold fail with a *NotPresentError (errors.Is ErrNotPresent); other dump
// types fail with ErrNoVirtual.
func (d *File) ReadVirtual(ctx context.Context, va uint64, buf []byte) error {
	if d.tri == nil {
		return fmt.Errorf("read %#x bytes at VA %#x from a %s dump: %w", len(buf), va, d.hdr.DumpType, ErrNoVirtual)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("read %#x bytes at VA %#x: %w", len(buf), va, err)
	}
	if err := d.virt.read(d.r, va, buf, true); err != nil {
		return fmt.Errorf("read %#x bytes at VA %#x: %w", len(buf), va, err)
	}
	return nil
}

// readBlocks reads from the data blocks only (used while the copies' VAs are still being derived).
func (m *virtualMap) readBlocks(r io.ReaderAt, va uint64, buf []byte) error {
	return m.read(r, va, buf, false)
}

func (m *virtualMap) read(r io.ReaderAt, va uint64, buf []byte, useCopies bool) error {
	for done := 0; done < len(buf); {
		cur := va + uint64(done)
		if cur < va {
			return &NotPresentError{Virtual: true, Addr: cur}
		}
		want := uint64(len(buf) - done)
		// limit stops a lower-precedence source where a copy begins.
		limit := ^uint64(0)
		var from *Block
		if useCopies {
			for i := range m.copies {
				c := &m.copies[i]
				end := c.VA + uint64(len(c.Data))
				if from == nil && c.VA <= cur && cur < end {
					from = c
					limit = min(limit, end)
				} else if c.VA > cur {
					limit = min(limit, c.VA)
				}
			}
		}
		if from != nil {
			n := min(want, limit-cur)
			copy(buf[done:done+int(n)], from.Data[cur-from.VA:])
			done += int(n)
			continue
		}
		i, found := slices.BinarySearchFunc(m.blocks, cur, func(s vseg, a uint64) int {
			switch {
			case s.end <= a:
				return -1
			case s.va > a:
				return 1
			}
			return 0
		})
		if !found {
			return &NotPresentError{Virtual: true, Addr: cur}
		}
		s := m.blocks[i]
		n := min(want, min(s.end, limit)-cur)
		if err := readFull(r, buf[done:done+int(n)], s.fileOff+int64(cur-s.va)); err != nil {
			return err
		}
		done += int(n)
	}
	return nil
}
