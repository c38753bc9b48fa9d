package machine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Range is a half-open span [Start, End) of guest-physical addresses.
type Range struct{ Start, End uint64 }

// Ranger is implemented by memory sources that know which physical ranges hold data, so that scanners can skip
// holes (a sparse 4 GiB image may hold only a few hundred MiB).
type Ranger interface {
	Ranges(ctx context.Context) ([]Range, error)
}

// RawImage is a PhysicalMemory over a raw memory image file where file offset == guest-physical address, as QEMU
// pmemsave and memory-backend-file produce (and as the fixture writes ram.img).
//
// The file is mapped read-only when possible: page-table walks do many 8-byte reads and a system call per read
// would dominate. Holes of a sparse file are reported by Ranges via SEEK_DATA/SEEK_HOLE.
type RawImage struct {
	f    *os.File
	size int64
	data []byte // nil when mmap failed; reads then go through ReadAt
}

// OpenRawImage opens path as a raw physical memory image.
func OpenRawImage(path string) (*RawImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open raw memory image: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat raw memory image %s: %w", path, err)
	}
	img := &RawImage{f: f, size: st.Size()}
	if st.Size() > 0 && st.Size() == int64(int(st.Size())) {
		if data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED); err == nil {
			img.data = data
		}
	}
	return img, nil
}

// Mapped is implemented by memory sources that can hand out their bytes without copying (a mapped file), so that
// whole-memory scans run at memory bandwidth.
type Mapped interface {
	// MappedBytes returns the bytes of [pa, pa+n) or nil when they are not directly addressable.
	MappedBytes(pa, n uint64) []byte
}

// MappedBytes implements Mapped; the slice aliases the read-only mapping and is valid until Close.
func (r *RawImage) MappedBytes(pa, n uint64) []byte {
	if r.data == nil || pa >= uint64(len(r.data)) || n > uint64(len(r.data))-pa {
		return nil
	}
	return r.data[pa : pa+n : pa+n]
}

// Size is the image length in bytes (the highest physical address + 1 it can serve).
func (r *RawImage) Size() uint64 { return uint64(r.size) }

// Close unmaps and closes the image.
func (r *RawImage) Close() error {
	var errs []error
	if r.data != nil {
		errs = append(errs, syscall.Munmap(r.data))
		r.data = nil
	}
	errs = append(errs, r.f.Close())
	return errors.Join(errs...)
}

// ReadPhysical implements PhysicalMemory.
func (r *RawImage) ReadPhysical(_ context.Context, pa uint64, buf []byte) error {
	if pa >= uint64(r.size) || uint64(len(buf)) > uint64(r.size)-pa {
		return fmt.Errorf("read %d bytes at PA %#x (image size %#x): %w", len(buf), pa, r.size, ErrOutOfRange)
	}
	if r.data != nil {
		copy(buf, r.data[pa:])
		return nil
	}
	if _, err := r.f.ReadAt(buf, int64(pa)); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %d bytes at PA %#x: %w", len(buf), pa, err)
	}
	return nil
}

// Ranges implements Ranger: the data extents of the file. Filesystems without SEEK_DATA report one range.
func (r *RawImage) Ranges(ctx context.Context) ([]Range, error) {
	const seekData, seekHole = 3, 4
	var out []Range
	off := int64(0)
	for off < r.size {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start, err := r.f.Seek(off, seekData)
		if err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) && errno == syscall.ENXIO {
				break // no more data
			}
			return []Range{{0, uint64(r.size)}}, nil
		}
		end, err := r.f.Seek(start, seekHole)
		if err != nil || end <= start {
			end = r.size
		}
		out = append(out, Range{uint64(start), uint64(end)})
		off = end
	}
	return out, nil
}
