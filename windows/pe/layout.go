package pe

import (
	"context"
	"fmt"
)

// maxLayoutSize bounds the memory image LayoutFile builds from a hostile file.
const maxLayoutSize = 256 << 20

// LayoutFile maps a PE file the way the loader does: headers at 0, each section's raw data at its
// VirtualAddress, BSS zero-filled. It returns the memory image (SizeOfImage bytes) and its headers, so that file
// images can be tested through the same in-memory code path as guest images.
func LayoutFile(file []byte) ([]byte, *Headers, error) {
	n := min(len(file), 0x1000)
	h, err := ParseHeaders(file[:n])
	if err != nil {
		return nil, nil, err
	}
	if h.SizeOfImage == 0 || h.SizeOfImage > maxLayoutSize {
		return nil, nil, fmt.Errorf("%w: SizeOfImage %#x", ErrMalformed, h.SizeOfImage)
	}
	img := make([]byte, h.SizeOfImage)
	copy(img, file[:min(len(file), int(h.SizeOfHeaders), len(img))])
	for _, s := range h.Sections {
		ptr := s.PointerToRawData
		if uint64(ptr) >= uint64(len(file)) || uint64(s.VirtualAddress) >= uint64(len(img)) {
			continue
		}
		raw := file[ptr:min(uint64(len(file)), uint64(ptr)+uint64(s.SizeOfRawData))]
		copy(img[s.VirtualAddress:], raw)
	}
	return img, h, nil
}

// Flat is a VirtualMemory over one contiguous byte slice mapped at Base; reads outside it fail.
type Flat struct {
	Base uint64
	Data []byte
}

// ReadVirtual implements machine.VirtualMemory.
func (f Flat) ReadVirtual(_ context.Context, va uint64, buf []byte) error {
	if va < f.Base || va-f.Base > uint64(len(f.Data)) || uint64(len(buf)) > uint64(len(f.Data))-(va-f.Base) {
		return fmt.Errorf("read %#x bytes at VA %#x: outside [%#x, %#x)", len(buf), va, f.Base, f.Base+uint64(len(f.Data)))
	}
	copy(buf, f.Data[va-f.Base:])
	return nil
}
