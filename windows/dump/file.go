package dump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// File is an opened crash dump. It is immutable after New/Open, so its methods may be called concurrently
// (as long as the underlying io.ReaderAt allows concurrent ReadAt, which *os.File does).
type File struct {
	r      io.ReaderAt
	size   int64
	closer io.Closer

	hdr    *Header
	bitmap *BitmapHeader // nil unless the physical pages are described by a bitmap
	phys   []physRun     // sorted by firstPage, non-overlapping
	tri    *Triage       // nil unless DumpType is TypeTriage
	virt   virtualMap
}

// physRun maps pageCount guest pages starting at firstPage to contiguous bytes at fileOff.
type physRun struct {
	firstPage uint64
	pageCount uint64
	fileOff   int64
}

// BitmapHeader is the "SDMP"/"FDMP" header at 0x2000 of kernel and bitmap dumps.
type BitmapHeader struct {
	Signature         string // "SDMP" (kernel/summary) or "FDMP" (full)
	FirstPage         uint64 // file offset of the first present page
	TotalPresentPages uint64 // number of set bits, as the writer recorded it
	Pages             uint64 // number of bits (page frames) the bitmap covers
}

// Bitmap header offsets (relative to HeaderSize; rizin dmp_bmp_header, kdmp-parser BMP_HEADER64).
const (
	bmpOffFirstPage  = 0x20
	bmpOffTotalPages = 0x28
	bmpOffPages      = 0x30
	bmpOffBitmap     = 0x38
)

// Open opens the dump at path. Close releases the file.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open crash dump: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat crash dump %s: %w", path, err)
	}
	d, err := New(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("crash dump %s: %w", path, err)
	}
	d.closer = f
	return d, nil
}

// New parses a dump of size bytes read through r. The reader must stay valid for the File's lifetime.
func New(r io.ReaderAt, size int64) (*File, error) {
	if size < HeaderSize {
		return nil, formatErr("file is %d bytes, smaller than the %#x-byte header", size, HeaderSize)
	}
	buf := make([]byte, HeaderSize)
	if err := readFull(r, buf, 0); err != nil {
		return nil, fmt.Errorf("read dump header: %w", err)
	}
	h, err := decodeHeader(buf)
	if err != nil {
		return nil, err
	}
	d := &File{r: r, size: size, hdr: h}
	switch h.DumpType {
	case TypeFull:
		err = d.initRuns()
	case TypeKernel, TypeBitmap, TypeLiveKernel:
		err = d.initBitmap()
	case TypeTriage:
		err = d.initTriage()
	}
	if err != nil {
		return nil, fmt.Errorf("%s dump: %w", h.DumpType, err)
	}
	return d, nil
}

// Close closes the file opened by Open; it is a no-op for a File made by New.
func (d *File) Close() error {
	if d.closer == nil {
		return nil
	}
	return d.closer.Close()
}

// Size is the dump's size in bytes.
func (d *File) Size() int64 { return d.size }

// Header returns a copy of the decoded DUMP_HEADER64.
func (d *File) Header() *Header {
	h := *d.hdr
	h.Runs = slices.Clone(d.hdr.Runs)
	h.Context = slices.Clone(d.hdr.Context)
	return &h
}

// Bitmap returns the bitmap header of kernel/bitmap dumps, or nil for other layouts.
func (d *File) Bitmap() *BitmapHeader {
	if d.bitmap == nil {
		return nil
	}
	b := *d.bitmap
	return &b
}

// HasPhysical reports whether ReadPhysical can return data (full, kernel and bitmap dumps).
func (d *File) HasPhysical() bool { return d.hdr.DumpType != TypeTriage && d.physSupported() }

func (d *File) physSupported() bool {
	switch d.hdr.DumpType {
	case TypeFull, TypeKernel, TypeBitmap, TypeLiveKernel:
		return true
	}
	return false
}

// PhysicalRuns lists the physical page runs whose contents the dump holds, in ascending order. Pages a
// truncated dump lost at its end are not listed.
func (d *File) PhysicalRuns() []Run {
	out := make([]Run, len(d.phys))
	for i, r := range d.phys {
		out[i] = Run{BasePage: r.firstPage, PageCount: r.pageCount}
	}
	return out
}

// ReadPhysical fills buf from guest-physical address pa. Bytes the dump does not hold fail with a
// *NotPresentError (errors.Is ErrNotPresent); triage dumps fail with ErrTriagePhysical.
func (d *File) ReadPhysical(ctx context.Context, pa uint64, buf []byte) error {
	switch {
	case d.hdr.DumpType == TypeTriage:
		return fmt.Errorf("read %#x bytes at PA %#x: %w", len(buf), pa, ErrTriagePhysical)
	case !d.physSupported():
		return fmt.Errorf("read %#x bytes at PA %#x from a %s dump: %w", len(buf), pa, d.hdr.DumpType, ErrUnsupported)
	}
	for done := 0; done < len(buf); {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %#x bytes at PA %#x: %w", len(buf), pa, err)
		}
		cur := pa + uint64(done)
		if cur < pa { // wrapped past 2^64
			return fmt.Errorf("read %#x bytes at PA %#x: %w", len(buf), pa, &NotPresentError{Addr: cur})
		}
		page := cur / PageSize
		i, found := slices.BinarySearchFunc(d.phys, page, func(r physRun, p uint64) int {
			switch {
			case r.firstPage+r.pageCount <= p:
				return -1
			case r.firstPage > p:
				return 1
			}
			return 0
		})
		if !found {
			return fmt.Errorf("read %#x bytes at PA %#x: %w", len(buf), pa, &NotPresentError{Addr: cur})
		}
		r := d.phys[i]
		within := cur - r.firstPage*PageSize
		avail := r.pageCount*PageSize - within
		n := uint64(len(buf) - done)
		n = min(n, avail)
		if err := readFull(d.r, buf[done:done+int(n)], r.fileOff+int64(within)); err != nil {
			return fmt.Errorf("read %#x bytes at PA %#x: %w", len(buf), pa, err)
		}
		done += int(n)
	}
	return nil
}

// initRuns maps a full dump: the runs' pages follow the header back to back.
func (d *File) initRuns() error {
	if !d.hdr.PhysicalMemoryValid {
		return formatErr("full dump without a physical memory descriptor")
	}
	off := int64(HeaderSize)
	var last uint64
	for i, r := range d.hdr.Runs {
		if r.PageCount == 0 {
			continue
		}
		end := r.BasePage + r.PageCount
		if end < r.BasePage || end > maxPFN {
			return formatErr("run %d (base page %#x, %#x pages) exceeds the physical address space", i, r.BasePage, r.PageCount)
		}
		if r.BasePage < last {
			return formatErr("run %d (base page %#x) overlaps or precedes the previous run", i, r.BasePage)
		}
		last = end
		// A truncated dump keeps the pages that fit; the rest read as not present.
		fit := uint64(0)
		if off < d.size {
			fit = uint64(d.size-off) / PageSize
		}
		n := min(r.PageCount, fit)
		if n > 0 {
			d.phys = append(d.phys, physRun{firstPage: r.BasePage, pageCount: n, fileOff: off})
		}
		if n < r.PageCount {
			break
		}
		off += int64(n) * PageSize
	}
	return nil
}

// maxPFN bounds page frame numbers so that page*PageSize never overflows 64 bits (52-bit physical space).
const maxPFN = 1 << 52

// initBitmap maps a kernel/bitmap dump: bit i of the bitmap says page frame i is present, and present pages
// follow FirstPage in ascending frame order.
func (d *File) initBitmap() error {
	var raw [bmpOffBitmap]byte
	if err := readFull(d.r, raw[:], HeaderSize); err != nil {
		return fmt.Errorf("read bitmap header: %w", err)
	}
	sig := string(raw[0:4])
	if (sig != "SDMP" && sig != "FDMP") || string(raw[4:8]) != sigDUMP {
		return formatErr("bitmap signature %q is not SDMPDUMP/FDMPDUMP", raw[0:8])
	}
	bh := &BitmapHeader{
		Signature:         sig,
		FirstPage:         le64(raw[bmpOffFirstPage:]),
		TotalPresentPages: le64(raw[bmpOffTotalPages:]),
		Pages:             le64(raw[bmpOffPages:]),
	}
	if bh.Pages > maxPFN {
		return formatErr("bitmap covers %#x pages, beyond the physical address space", bh.Pages)
	}
	bitmapOff := int64(HeaderSize + bmpOffBitmap)
	nbytes := (bh.Pages + 7) / 8
	if nbytes > uint64(d.size-bitmapOff) {
		return formatErr("bitmap of %#x pages (%#x bytes) runs past the end of the %#x-byte file", bh.Pages, nbytes, d.size)
	}
	if bh.FirstPage < uint64(bitmapOff)+nbytes && bh.TotalPresentPages > 0 {
		return formatErr("first page at file offset %#x overlaps the bitmap ending at %#x", bh.FirstPage, uint64(bitmapOff)+nbytes)
	}
	bits := make([]byte, nbytes)
	if err := readFull(d.r, bits, bitmapOff); err != nil {
		return fmt.Errorf("read %#x-byte bitmap: %w", nbytes, err)
	}
	d.bitmap = bh
	d.phys = bitmapRuns(bits, bh.Pages, bh.FirstPage, d.size)
	return nil
}

// bitmapRuns turns the bitmap into runs of consecutive present frames, stopping at the first page whose data
// would lie past the end of the file (a truncated dump). Runs are bounded by the file size: each one holds at
// least one page of file data.
func bitmapRuns(bits []byte, pages, firstPage uint64, size int64) []physRun {
	var runs []physRun
	if firstPage >= uint64(size) {
		return nil
	}
	fitPages := (uint64(size) - firstPage) / PageSize
	var present uint64
	for pfn := uint64(0); pfn < pages && present < fitPages; {
		b := bits[pfn/8]
		if pfn%8 == 0 && b == 0 {
			pfn += 8
			continue
		}
		if b&(1<<(pfn%8)) == 0 {
			pfn++
			continue
		}
		start := pfn
		for pfn < pages && present < fitPages && bits[pfn/8]&(1<<(pfn%8)) != 0 {
			if pfn%8 == 0 && bits[pfn/8] == 0xFF && pfn+8 <= pages && present+8 <= fitPages {
				pfn += 8
				present += 8
				continue
			}
			pfn++
			present++
		}
		n := pfn - start
		runs = append(runs, physRun{firstPage: start, pageCount: n, fileOff: int64(firstPage + (present-n)*PageSize)})
	}
	return runs
}

// readFull reads len(buf) bytes at off, turning a short read into an error that names the range.
func readFull(r io.ReaderAt, buf []byte, off int64) error {
	if off < 0 {
		return formatErr("negative file offset %d", off)
	}
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %#x bytes at file offset %#x (got %#x): %w", len(buf), off, n, err)
}
