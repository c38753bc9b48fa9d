package pe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/kdstub/kdstub/windows/machine"
)

// Image is a PE image mapped at Base in some address space.
type Image struct {
	Base uint64
	*Headers

	mem machine.VirtualMemory

	mu      sync.Mutex
	pages   map[uint32][]byte // RVA page → bytes; nil value = unreadable
	missing int
}

// Open reads and decodes the header page at base.
func Open(ctx context.Context, mem machine.VirtualMemory, base uint64) (*Image, error) {
	hdr := make([]byte, 0x1000)
	if err := mem.ReadVirtual(ctx, base, hdr); err != nil {
		return nil, fmt.Errorf("read PE header page at %#x: %w", base, err)
	}
	h, err := ParseHeaders(hdr)
	if err != nil {
		return nil, fmt.Errorf("PE image at %#x: %w", base, err)
	}
	return &Image{Base: base, Headers: h, mem: mem, pages: map[uint32][]byte{0: hdr}}, nil
}

// maxCachedPages bounds the image's page cache (64 MiB).
const maxCachedPages = 16384

// page returns the 4 KiB page at rva (page-aligned), or nil when it cannot be read (paged out or freed).
func (im *Image) page(ctx context.Context, rva uint32) []byte {
	im.mu.Lock()
	p, ok := im.pages[rva]
	im.mu.Unlock()
	if ok {
		return p
	}
	buf := make([]byte, 0x1000)
	if err := im.mem.ReadVirtual(ctx, im.Base+uint64(rva), buf); err != nil {
		buf = nil
	}
	im.mu.Lock()
	if len(im.pages) >= maxCachedPages {
		im.pages = map[uint32][]byte{}
	}
	im.pages[rva] = buf
	if buf == nil {
		im.missing++
	}
	im.mu.Unlock()
	return buf
}

// ErrUnreadable says a range of the image is not resident.
var ErrUnreadable = errors.New("image range not resident")

// ReadRVA reads len(buf) bytes at rva; unreadable pages make it fail with ErrUnreadable.
func (im *Image) ReadRVA(ctx context.Context, rva uint32, buf []byte) error {
	if uint64(rva)+uint64(len(buf)) > uint64(im.SizeOfImage) {
		return fmt.Errorf("read %#x bytes at RVA %#x: beyond SizeOfImage %#x: %w", len(buf), rva, im.SizeOfImage, ErrMalformed)
	}
	for done := 0; done < len(buf); {
		cur := rva + uint32(done)
		p := im.page(ctx, cur&^0xFFF)
		if p == nil {
			return fmt.Errorf("read %#x bytes at RVA %#x (VA %#x): %w", len(buf), rva, im.Base+uint64(cur), ErrUnreadable)
		}
		done += copy(buf[done:], p[cur&0xFFF:])
	}
	return nil
}

// rvaReader is an io.ReaderAt whose offsets are RVAs; unreadable pages read as zeros so that go-pe's accessors,
// which treat errors as zero values anyway, see a consistent image.
type rvaReader struct {
	ctx context.Context
	im  *Image
}

func (r rvaReader) ReadAt(buf []byte, off int64) (int, error) {
	if off < 0 || off >= int64(r.im.SizeOfImage) {
		return 0, io.EOF
	}
	n := len(buf)
	if rest := int64(r.im.SizeOfImage) - off; int64(n) > rest {
		n = int(rest)
	}
	for done := 0; done < n; {
		cur := uint32(off) + uint32(done)
		p := r.im.page(r.ctx, cur&^0xFFF)
		chunk := min(int(0x1000-cur&0xFFF), n-done)
		if p == nil {
			clear(buf[done : done+chunk])
		} else {
			copy(buf[done:done+chunk], p[cur&0xFFF:])
		}
		done += chunk
	}
	if n < len(buf) {
		return n, io.EOF
	}
	return n, nil
}

// Resident reports whether the page holding rva could be read.
func (im *Image) Resident(ctx context.Context, rva uint32) bool {
	return im.page(ctx, rva&^0xFFF) != nil
}
