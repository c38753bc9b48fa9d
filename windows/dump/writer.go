package dump

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// PhysicalMemory is what the writer copies pages from. The qemuqmp Machine, its RAM backends, a raw image
// and File itself all have this method.
type PhysicalMemory interface {
	ReadPhysical(ctx context.Context, pa uint64, buf []byte) error
}

// Layout selects how Write stores physical pages.
type Layout int

const (
	// LayoutFull writes DumpType 1: the pages of every run, back to back after the header.
	LayoutFull Layout = iota + 1
	// LayoutBitmap writes DumpType 5 with an "FDMP" bitmap (complete memory): one bit per page frame,
	// present pages after it.
	LayoutBitmap
	// LayoutKernelBitmap writes DumpType 5 with an "SDMP" bitmap, as Windows does for kernel memory dumps.
	LayoutKernelBitmap
)

// maxBitmapBytes bounds the bitmap Write will build (1 GiB covers 32 TiB of physical address space).
const maxBitmapBytes = 1 << 30

// writeChunkPages is how many pages Write moves per source read.
const writeChunkPages = 64

// Write stores a crash dump of mem to w. hdr supplies the header fields; hdr.Runs lists the physical pages to
// include (ascending, non-overlapping), and everything outside them reads back as not present. DumpType,
// NumberOfPages, RequiredDumpSpace and the descriptor validity are set by Write; hdr is not modified. A nil
// hdr.Context is written as a zeroed CONTEXT.
func Write(ctx context.Context, w io.Writer, hdr *Header, mem PhysicalMemory, layout Layout) error {
	h := *hdr
	h.Runs = slices.Clone(hdr.Runs)
	if h.Context == nil {
		h.Context = make([]byte, ContextSize)
	}
	var pages uint64
	var last uint64
	for i, r := range h.Runs {
		end := r.BasePage + r.PageCount
		if end < r.BasePage || end > maxPFN {
			return fmt.Errorf("write dump: run %d (base page %#x, %#x pages) exceeds the physical address space", i, r.BasePage, r.PageCount)
		}
		if i > 0 && r.BasePage < last {
			return fmt.Errorf("write dump: run %d (base page %#x) overlaps or precedes the previous run", i, r.BasePage)
		}
		last = end
		pages += r.PageCount
	}
	h.NumberOfPages = pages
	h.PhysicalMemoryValid = true

	var pre []byte // bitmap header, bitmap and padding up to the first page
	switch layout {
	case LayoutFull:
		if len(h.Runs) > MaxRuns {
			return fmt.Errorf("write full dump: %d runs, the header holds at most %d (use a bitmap layout)", len(h.Runs), MaxRuns)
		}
		h.DumpType = TypeFull
	case LayoutBitmap, LayoutKernelBitmap:
		h.DumpType = TypeBitmap
		sig := "FDMP"
		if layout == LayoutKernelBitmap {
			sig = "SDMP"
		}
		if len(h.Runs) > MaxRuns {
			h.PhysicalMemoryValid = false // the bitmap alone describes the pages
			h.Runs = nil
		}
		if (last+7)/8 > maxBitmapBytes {
			return fmt.Errorf("write bitmap dump: frames up to %#x need a bitmap over %d bytes", last, maxBitmapBytes)
		}
		pre = bitmapSection(sig, hdr.Runs, last, pages)
	default:
		return fmt.Errorf("write dump: unknown layout %d", layout)
	}
	h.RequiredDumpSpace = uint64(HeaderSize) + uint64(len(pre)) + pages*PageSize
	hb, err := h.encode()
	if err != nil {
		return fmt.Errorf("write dump: %w", err)
	}
	if _, err := w.Write(hb); err != nil {
		return fmt.Errorf("write dump header: %w", err)
	}
	if _, err := w.Write(pre); err != nil {
		return fmt.Errorf("write dump bitmap: %w", err)
	}
	buf := make([]byte, writeChunkPages*PageSize)
	for _, r := range hdr.Runs {
		for p := uint64(0); p < r.PageCount; {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("write dump: %w", err)
			}
			n := min(r.PageCount-p, writeChunkPages)
			pa := (r.BasePage + p) * PageSize
			chunk := buf[:n*PageSize]
			if err := mem.ReadPhysical(ctx, pa, chunk); err != nil {
				return fmt.Errorf("write dump: read %#x bytes at PA %#x: %w", len(chunk), pa, err)
			}
			if _, err := w.Write(chunk); err != nil {
				return fmt.Errorf("write dump pages at PA %#x: %w", pa, err)
			}
			p += n
		}
	}
	return nil
}

// bitmapSection builds the bitmap header, the bitmap for frames [0, frames) and zero padding up to the
// page-aligned first page.
func bitmapSection(sig string, runs []Run, frames, present uint64) []byte {
	nbytes := (frames + 7) / 8
	firstPage := alignUp(HeaderSize+bmpOffBitmap+nbytes, PageSize)
	b := make([]byte, firstPage-HeaderSize)
	copy(b, sig)
	copy(b[4:], sigDUMP)
	binary.LittleEndian.PutUint64(b[bmpOffFirstPage:], firstPage)
	binary.LittleEndian.PutUint64(b[bmpOffTotalPages:], present)
	binary.LittleEndian.PutUint64(b[bmpOffPages:], frames)
	bits := b[bmpOffBitmap : bmpOffBitmap+nbytes]
	for _, r := range runs {
		for pfn := r.BasePage; pfn < r.BasePage+r.PageCount; pfn++ {
			bits[pfn/8] |= 1 << (pfn % 8)
		}
	}
	return b
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }
