package discover

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"

	"github.com/kdstub/kdstub/windows/machine"
	"github.com/kdstub/kdstub/windows/paging"
)

// Progress reports scan progress in bytes; it may be nil.
type Progress func(done, total uint64)

// scanChunk is the read size of the physical scan: large enough to amortise per-read costs, small enough to
// keep the scan cancellable.
const scanChunk = 2 << 20

// maxDTBCandidates bounds how many self-map candidates are tried as kernel DTBs.
const maxDTBCandidates = 64

// Kernel image window of Win10 1607+ / Win11 (and the Win7/8 fixed mapping just above its start).
const (
	kernelWindowStart = 0xFFFF_F800_0000_0000
	kernelWindowEnd   = 0xFFFF_F808_0000_0000
)

// IsSelfMapPML4 reports whether page (at physical address pa) looks like an x64 PML4 with a self-referencing
// entry in the kernel half (windows-internals §1.5): the entry is present, supervisor, points at pa itself, and
// the kernel half holds at least a few other present supervisor entries. It returns the self-map index.
func IsSelfMapPML4(page []byte, pa uint64) (int, bool) {
	self := -1
	for i := 0x100; i < 0x200; i++ {
		e := binary.LittleEndian.Uint64(page[i*8:])
		if e&0x000F_FFFF_FFFF_F000 == pa && e&0x5 == 0x1 {
			self = i
			break
		}
	}
	if self < 0 {
		return 0, false
	}
	kernel := 0
	for i := 0x100; i < 0x200; i++ {
		if e := binary.LittleEndian.Uint64(page[i*8:]); e&0x5 == 0x1 && i != self {
			kernel++
		}
	}
	return self, kernel >= 2
}

// ScanDTBs scans physical memory for self-map PML4 candidates, skipping holes when phys is a machine.Ranger.
func ScanDTBs(ctx context.Context, phys machine.PhysicalMemory, size uint64, progress Progress) ([]uint64, error) {
	ranges := []machine.Range{{Start: 0, End: size}}
	if r, ok := phys.(machine.Ranger); ok {
		rs, err := r.Ranges(ctx)
		if err != nil {
			return nil, fmt.Errorf("list data ranges: %w", err)
		}
		ranges = rs
	}
	var total, done uint64
	for _, r := range ranges {
		total += r.End - r.Start
	}
	var out []uint64
	buf := make([]byte, scanChunk)
	mapped, _ := phys.(machine.Mapped)
	for _, r := range ranges {
		for pa := r.Start &^ 0xFFF; pa < r.End; pa += scanChunk {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			n := min(uint64(scanChunk), (r.End+0xFFF)&^0xFFF-pa)
			var chunk []byte
			var err error
			if mapped != nil {
				chunk = mapped.MappedBytes(pa, n)
			}
			if chunk == nil {
				chunk = buf[:n]
				err = phys.ReadPhysical(ctx, pa, chunk)
			}
			if err != nil {
				// A chunk crossing the end of memory: fall back to page reads.
				chunk = chunk[:0]
				for p := pa; p < pa+n; p += 0x1000 {
					page := buf[p-pa : p-pa+0x1000]
					if phys.ReadPhysical(ctx, p, page) != nil {
						break
					}
					chunk = buf[:p-pa+0x1000]
				}
			}
			for off := 0; off+0x1000 <= len(chunk); off += 0x1000 {
				if _, ok := IsSelfMapPML4(chunk[off:off+0x1000], pa+uint64(off)); ok {
					out = append(out, pa+uint64(off))
				}
			}
			done += n
			if progress != nil {
				progress(min(done, total), total)
			}
		}
	}
	return out, nil
}

// FromPhysical discovers the kernel without CPU state: it scans physical memory for page-table roots with a
// self-map, then walks each candidate's kernel window for the ntoskrnl image (windows-internals §1.5, §2.2).
func FromPhysical(ctx context.Context, lg *slog.Logger, phys machine.PhysicalMemory, size uint64, progress Progress) (*Kernel, error) {
	dtbs, err := ScanDTBs(ctx, phys, size, progress)
	if err != nil {
		return nil, err
	}
	if len(dtbs) == 0 {
		return nil, errors.New("no page-table root with a self-map found in physical memory")
	}
	// System's PML4 is normally among the lowest (0x1AD000 in the 19041 dump); try low addresses first.
	sort.Slice(dtbs, func(a, b int) bool { return dtbs[a] < dtbs[b] })
	var errs []error
	for i, dtb := range dtbs {
		if i >= maxDTBCandidates {
			break
		}
		space := paging.New(phys, dtb, paging.ModeX64)
		k, err := findKernelInWindow(ctx, space)
		if err != nil {
			errs = append(errs, fmt.Errorf("DTB %#x: %w", dtb, err))
			continue
		}
		k.method("DTB", fmt.Sprintf("physical scan for a self-map PML4 (%d candidates)", len(dtbs)))
		if err := k.finish(ctx, lg); err != nil {
			return k, err
		}
		return k, nil
	}
	return nil, fmt.Errorf("no ntoskrnl in the kernel window of %d DTB candidates: %w", len(dtbs), errors.Join(errs...))
}

// findKernelInWindow walks the mapped pages of the kernel image window for a validated ntoskrnl header.
func findKernelInWindow(ctx context.Context, space *paging.AddressSpace) (*Kernel, error) {
	var found *Kernel
	var lastErr error = errors.New("no MZ page in the kernel window")
	var mz [2]byte
	err := space.Enumerate(ctx, kernelWindowStart, kernelWindowEnd, func(va, pa, size uint64) bool {
		for off := uint64(0); off < size; off += 0x1000 {
			if space.Physical().ReadPhysical(ctx, pa+off, mz[:]) != nil || mz != [2]byte{'M', 'Z'} {
				continue
			}
			im, ex, how, err := validateKernel(ctx, space, va+off, 0)
			if err != nil {
				lastErr = err
				continue
			}
			found = newKernel(space)
			found.Image, found.Exports, found.Base, found.Size = im, ex, im.Base, im.SizeOfImage
			found.method("Base", "walk of the kernel window's mappings for MZ; validated by "+how)
			return false
		}
		return true
	})
	if found != nil {
		return found, nil
	}
	if err != nil {
		return nil, err
	}
	return nil, lastErr
}

// FromDTB discovers the kernel when a kernel DTB is known but no CPU state is (a crash dump header gives one).
func FromDTB(ctx context.Context, lg *slog.Logger, phys machine.PhysicalMemory, dtb uint64, how string) (*Kernel, error) {
	space := paging.New(phys, dtb, paging.ModeX64)
	k, err := findKernelInWindow(ctx, space)
	if err != nil {
		return nil, fmt.Errorf("DTB %#x (%s): %w", dtb, how, err)
	}
	k.method("DTB", how)
	return k, k.finish(ctx, lg)
}
