// Package pe is a view of a PE image as it lies in guest memory (sections at ImageBase+VirtualAddress, not at
// file offsets), tolerant of pages that are paged out or freed.
//
// Headers are decoded here from the header page (fixed offsets, windows-internals §8.1); the export directory and
// the CodeView record are read with go-pe's structure accessors over an RVA-addressed reader, because go-pe's own
// file-offset resolver does not apply to memory images.
package pe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Machine types.
const (
	MachineI386  = 0x014C
	MachineAMD64 = 0x8664
)

// Data directory indices.
const (
	DirExport = 0
	DirDebug  = 6
)

// Section characteristics.
const (
	SectionCode        = 0x0000_0020
	SectionDiscardable = 0x0200_0000
	SectionExecute     = 0x2000_0000
	SectionWrite       = 0x8000_0000
)

// ErrMalformed is wrapped by every header decoding error.
var ErrMalformed = errors.New("malformed PE image")

// Section is one section header.
type Section struct {
	Name             string
	VirtualAddress   uint32
	VirtualSize      uint32
	SizeOfRawData    uint32
	PointerToRawData uint32 // file offset; meaningless in memory, used only to lay files out
	Characteristics  uint32
}

// Contains reports whether rva falls inside the section's memory extent.
func (s Section) Contains(rva uint32) bool {
	size := s.VirtualSize
	if size == 0 {
		size = s.SizeOfRawData
	}
	return rva >= s.VirtualAddress && rva-s.VirtualAddress < size
}

// Size is the section's extent in memory.
func (s Section) Size() uint32 {
	if s.VirtualSize == 0 {
		return s.SizeOfRawData
	}
	return s.VirtualSize
}

// DataDirectory is one optional-header data directory.
type DataDirectory struct{ RVA, Size uint32 }

// Headers is the decoded header page.
type Headers struct {
	Machine       uint16
	Is64          bool
	TimeDateStamp uint32
	EntryPoint    uint32
	ImageBase     uint64
	SizeOfImage   uint32
	SizeOfHeaders uint32
	Subsystem     uint16
	Lfanew        uint32
	Sections      []Section
	Directories   [16]DataDirectory
}

// maxSections bounds the section table (the PE loader itself refuses more than 96).
const maxSections = 96

// ParseHeaders decodes the DOS, NT and section headers from the first bytes of an image (normally its header
// page). It never reads beyond hdr.
func ParseHeaders(hdr []byte) (*Headers, error) {
	u16 := func(off uint32) (uint16, error) {
		if uint64(off)+2 > uint64(len(hdr)) {
			return 0, fmt.Errorf("%w: header field at %#x beyond %#x bytes", ErrMalformed, off, len(hdr))
		}
		return binary.LittleEndian.Uint16(hdr[off:]), nil
	}
	u32 := func(off uint32) (uint32, error) {
		if uint64(off)+4 > uint64(len(hdr)) {
			return 0, fmt.Errorf("%w: header field at %#x beyond %#x bytes", ErrMalformed, off, len(hdr))
		}
		return binary.LittleEndian.Uint32(hdr[off:]), nil
	}
	if len(hdr) < 0x40 || hdr[0] != 'M' || hdr[1] != 'Z' {
		return nil, fmt.Errorf("%w: no MZ signature", ErrMalformed)
	}
	h := &Headers{}
	h.Lfanew = binary.LittleEndian.Uint32(hdr[0x3C:])
	if h.Lfanew == 0 || h.Lfanew >= 0x1000 {
		return nil, fmt.Errorf("%w: e_lfanew %#x out of range", ErrMalformed, h.Lfanew)
	}
	sig, err := u32(h.Lfanew)
	if err != nil {
		return nil, err
	}
	if sig != 0x4550 {
		return nil, fmt.Errorf("%w: no PE signature at %#x", ErrMalformed, h.Lfanew)
	}
	fh := h.Lfanew + 4
	if h.Machine, err = u16(fh); err != nil {
		return nil, err
	}
	nsec, err := u16(fh + 2)
	if err != nil {
		return nil, err
	}
	if h.TimeDateStamp, err = u32(fh + 4); err != nil {
		return nil, err
	}
	optSize, err := u16(fh + 16)
	if err != nil {
		return nil, err
	}
	oh := fh + 20
	magic, err := u16(oh)
	if err != nil {
		return nil, err
	}
	var dirOff, nDirOff uint32
	switch magic {
	case 0x20B:
		h.Is64 = true
		lo, err1 := u32(oh + 0x18)
		hi, err2 := u32(oh + 0x1C)
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		h.ImageBase = uint64(hi)<<32 | uint64(lo)
		dirOff, nDirOff = oh+0x70, oh+0x6C
	case 0x10B:
		b, err := u32(oh + 0x1C)
		if err != nil {
			return nil, err
		}
		h.ImageBase = uint64(b)
		dirOff, nDirOff = oh+0x60, oh+0x5C
	default:
		return nil, fmt.Errorf("%w: optional header magic %#x", ErrMalformed, magic)
	}
	var errs [5]error
	h.EntryPoint, errs[0] = u32(oh + 0x10)
	h.SizeOfImage, errs[1] = u32(oh + 0x38)
	h.SizeOfHeaders, errs[2] = u32(oh + 0x3C)
	h.Subsystem, errs[3] = u16(oh + 0x44)
	var nDirs uint32
	nDirs, errs[4] = u32(nDirOff)
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	nDirs = min(nDirs, 16)
	for i := uint32(0); i < nDirs; i++ {
		rva, err1 := u32(dirOff + 8*i)
		size, err2 := u32(dirOff + 8*i + 4)
		if err1 != nil || err2 != nil {
			break // a truncated directory table leaves the rest empty
		}
		h.Directories[i] = DataDirectory{RVA: rva, Size: size}
	}
	if nsec > maxSections {
		return nil, fmt.Errorf("%w: %d sections", ErrMalformed, nsec)
	}
	st := oh + uint32(optSize)
	for i := uint32(0); i < uint32(nsec); i++ {
		off := st + 40*i
		if uint64(off)+40 > uint64(len(hdr)) {
			return nil, fmt.Errorf("%w: section table entry %d beyond %#x header bytes", ErrMalformed, i, len(hdr))
		}
		e := hdr[off : off+40]
		h.Sections = append(h.Sections, Section{
			Name:             strings.TrimRight(string(e[:8]), "\x00"),
			VirtualSize:      binary.LittleEndian.Uint32(e[8:]),
			VirtualAddress:   binary.LittleEndian.Uint32(e[12:]),
			SizeOfRawData:    binary.LittleEndian.Uint32(e[16:]),
			PointerToRawData: binary.LittleEndian.Uint32(e[20:]),
			Characteristics:  binary.LittleEndian.Uint32(e[36:]),
		})
	}
	return h, nil
}

// Section returns the first section with the given name.
func (h *Headers) Section(name string) (Section, bool) {
	for _, s := range h.Sections {
		if s.Name == name {
			return s, true
		}
	}
	return Section{}, false
}

// SectionAt returns the section holding rva.
func (h *Headers) SectionAt(rva uint32) (Section, bool) {
	for _, s := range h.Sections {
		if s.Contains(rva) {
			return s, true
		}
	}
	return Section{}, false
}
