// Package paging translates guest-virtual to guest-physical addresses the way the CPU (and Windows' software
// PTE conventions) would, over an abstract PhysicalMemory.
//
// An AddressSpace is one page-table root (a DTB) plus a paging mode. It implements machine.VirtualMemory so that
// every object walker works the same over a live guest, a raw image or (via the dump reader) a triage dump.
package paging

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/windows/machine"
)

// Mode is a paging mode.
type Mode int

// Paging modes, named by their number of table levels.
const (
	ModeX86     Mode = 2 // 32-bit, 10/10/12 split, 4 MiB PSE pages
	ModePAE     Mode = 3 // 32-bit PAE, 2/9/9/12
	ModeX64     Mode = 4 // 4-level long mode
	ModeX64LA57 Mode = 5 // 5-level long mode
)

func (m Mode) String() string {
	switch m {
	case ModeX86:
		return "x86"
	case ModePAE:
		return "x86-pae"
	case ModeX64:
		return "x64"
	case ModeX64LA57:
		return "x64-la57"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// ModeFromRegisters picks the paging mode the CPU is in.
func ModeFromRegisters(r *amd64.Registers) (Mode, error) {
	switch r.PagingLevels() {
	case 5:
		return ModeX64LA57, nil
	case 4:
		return ModeX64, nil
	case 3:
		return ModePAE, nil
	case 2:
		return ModeX86, nil
	}
	return 0, errors.New("paging is disabled (CR0.PG=0)")
}

// Page-table entry bits (x86/x64 and Windows software PTEs).
const (
	ptePresent    = 1 << 0
	pteLarge      = 1 << 7
	pteProto      = 1 << 10 // Windows software PTE: prototype
	pteTransition = 1 << 11 // Windows software PTE: transition (frame still in RAM)
	frameMask64   = 0x000F_FFFF_FFFF_F000
)

// DTBMask is the CR3 bits that hold the top-level table (the low 12 may be a PCID).
const DTBMask = frameMask64

// ErrNotPresent is matched (errors.Is) by every *NotPresentError.
var ErrNotPresent = errors.New("page not present")

// NotPresentError says where a walk stopped.
type NotPresentError struct {
	VA    uint64
	Level int    // table level whose entry was not present: 5..1 (1 = PTE)
	Entry uint64 // the raw entry
}

func (e *NotPresentError) Error() string {
	return fmt.Sprintf("page not present at VA %#x (level %d, entry %#x)", e.VA, e.Level, e.Entry)
}

// Is makes errors.Is(err, ErrNotPresent) true.
func (e *NotPresentError) Is(target error) bool { return target == ErrNotPresent }

// NonCanonicalError reports a VA the mode cannot address.
type NonCanonicalError struct {
	VA   uint64
	Mode Mode
}

func (e *NonCanonicalError) Error() string {
	return fmt.Sprintf("VA %#x is not canonical in %s paging", e.VA, e.Mode)
}

// Translation is one resolved page: PA of the page's first byte and the page size.
type Translation struct {
	PA   uint64 // physical address of the VA itself
	Size uint64 // size of the page mapping it (4 KiB, 2 MiB, 4 MiB, 1 GiB)
}

// maxCacheEntries bounds the per-address-space cache; when full it is dropped wholesale, which is cheaper than
// LRU bookkeeping for the scan-then-stop access pattern of a debugger.
const maxCacheEntries = 1 << 16

// AddressSpace translates and reads one page-table hierarchy.
type AddressSpace struct {
	mem  machine.PhysicalMemory
	dtb  uint64
	mode Mode

	mu    sync.Mutex
	cache map[uint64]uint64 // 4 KiB VA page → 4 KiB PA page
}

// New returns an address space rooted at dtb (a CR3 value; PCID bits are masked off).
func New(mem machine.PhysicalMemory, dtb uint64, mode Mode) *AddressSpace {
	switch mode {
	case ModePAE:
		dtb &= 0xFFFF_FFE0
	case ModeX86:
		dtb &= 0xFFFF_F000
	default:
		dtb &= DTBMask
	}
	return &AddressSpace{mem: mem, dtb: dtb, mode: mode, cache: map[uint64]uint64{}}
}

// FromRegisters returns the address space a CPU is currently using.
func FromRegisters(mem machine.PhysicalMemory, r *amd64.Registers) (*AddressSpace, error) {
	mode, err := ModeFromRegisters(r)
	if err != nil {
		return nil, err
	}
	return New(mem, r.CR3, mode), nil
}

// DTB is the masked table root.
func (as *AddressSpace) DTB() uint64 { return as.dtb }

// Mode is the paging mode.
func (as *AddressSpace) Mode() Mode { return as.mode }

// Physical is the memory the tables live in.
func (as *AddressSpace) Physical() machine.PhysicalMemory { return as.mem }

// WithDTB returns a fresh address space in the same mode over the same memory (a process's tables).
func (as *AddressSpace) WithDTB(dtb uint64) *AddressSpace { return New(as.mem, dtb, as.mode) }

// Invalidate drops every cached translation; call it whenever the guest may have run.
func (as *AddressSpace) Invalidate() {
	as.mu.Lock()
	as.cache = map[uint64]uint64{}
	as.mu.Unlock()
}

// Canonical reports whether va is addressable in the mode.
func (as *AddressSpace) Canonical(va uint64) bool { return Canonical(va, as.mode) }

// Canonical reports whether va is addressable in mode.
func Canonical(va uint64, mode Mode) bool {
	switch mode {
	case ModeX64:
		top := int64(va) >> 47
		return top == 0 || top == -1
	case ModeX64LA57:
		top := int64(va) >> 56
		return top == 0 || top == -1
	default:
		return va>>32 == 0
	}
}

// Translate resolves va to a physical address.
func (as *AddressSpace) Translate(ctx context.Context, va uint64) (uint64, error) {
	page := va &^ 0xFFF
	as.mu.Lock()
	pa, ok := as.cache[page]
	as.mu.Unlock()
	if ok {
		return pa | va&0xFFF, nil
	}
	t, err := as.walk(ctx, va, true)
	if err != nil {
		return 0, err
	}
	as.mu.Lock()
	if len(as.cache) >= maxCacheEntries {
		as.cache = map[uint64]uint64{}
	}
	as.cache[page] = t.PA &^ 0xFFF
	as.mu.Unlock()
	return t.PA, nil
}

// Lookup resolves va without touching the cache and also reports the page size.
func (as *AddressSpace) Lookup(ctx context.Context, va uint64) (Translation, error) {
	return as.walk(ctx, va, true)
}

func (as *AddressSpace) readEntry(ctx context.Context, pa uint64, size int) (uint64, error) {
	var b [8]byte
	if err := as.mem.ReadPhysical(ctx, pa, b[:size]); err != nil {
		return 0, fmt.Errorf("read page-table entry at PA %#x: %w", pa, err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func (as *AddressSpace) walk(ctx context.Context, va uint64, allowProto bool) (Translation, error) {
	if !as.Canonical(va) {
		return Translation{}, &NonCanonicalError{VA: va, Mode: as.mode}
	}
	switch as.mode {
	case ModeX64, ModeX64LA57:
		return as.walk64(ctx, va, allowProto)
	case ModePAE:
		return as.walkPAE(ctx, va)
	case ModeX86:
		return as.walkX86(ctx, va)
	}
	return Translation{}, fmt.Errorf("unsupported paging mode %d", as.mode)
}

func (as *AddressSpace) walk64(ctx context.Context, va uint64, allowProto bool) (Translation, error) {
	table := as.dtb
	for level := int(as.mode); level >= 1; level-- {
		shift := uint(12 + 9*(level-1))
		idx := (va >> shift) & 0x1FF
		e, err := as.readEntry(ctx, table+idx*8, 8)
		if err != nil {
			return Translation{}, fmt.Errorf("translate VA %#x (level %d): %w", va, level, err)
		}
		if e&ptePresent == 0 {
			if level == 1 {
				return as.softwarePTE(ctx, va, e, allowProto)
			}
			return Translation{}, &NotPresentError{VA: va, Level: level, Entry: e}
		}
		if e&pteLarge != 0 && (level == 2 || level == 3) {
			size := uint64(1) << shift
			base := e & frameMask64 &^ (size - 1)
			return Translation{PA: base | va&(size-1), Size: size}, nil
		}
		table = e & frameMask64
	}
	return Translation{PA: table | va&0xFFF, Size: 4096}, nil
}

// softwarePTE handles Windows' non-present PTE states whose data is still in RAM (windows-internals §1.4):
// transition PTEs directly, prototype PTEs by reading the prototype (a kernel VA in bits 63:16) and accepting it
// when it is valid or in transition.
func (as *AddressSpace) softwarePTE(ctx context.Context, va, e uint64, allowProto bool) (Translation, error) {
	notPresent := &NotPresentError{VA: va, Level: 1, Entry: e}
	switch {
	case e&pteProto == 0 && e&pteTransition != 0:
		return Translation{PA: e&frameMask64 | va&0xFFF, Size: 4096}, nil
	case e&pteProto != 0 && allowProto:
		protoVA := uint64(int64(e) >> 16)
		if protoVA == 0xFFFF_FFFF_FFFF_0000 || protoVA>>63 == 0 {
			return Translation{}, notPresent // VAD-described prototype or not a kernel VA: nothing in RAM to follow
		}
		t, err := as.walk64(ctx, protoVA, false)
		if err != nil {
			return Translation{}, notPresent
		}
		p, err := as.readEntry(ctx, t.PA, 8)
		if err != nil {
			return Translation{}, notPresent
		}
		if p&ptePresent != 0 || (p&pteProto == 0 && p&pteTransition != 0) {
			return Translation{PA: p&frameMask64 | va&0xFFF, Size: 4096}, nil
		}
	}
	return Translation{}, notPresent
}

func (as *AddressSpace) walkPAE(ctx context.Context, va uint64) (Translation, error) {
	pdpte, err := as.readEntry(ctx, as.dtb+(va>>30&3)*8, 8)
	if err != nil {
		return Translation{}, fmt.Errorf("translate VA %#x (level 3): %w", va, err)
	}
	if pdpte&ptePresent == 0 {
		return Translation{}, &NotPresentError{VA: va, Level: 3, Entry: pdpte}
	}
	pde, err := as.readEntry(ctx, pdpte&frameMask64+(va>>21&0x1FF)*8, 8)
	if err != nil {
		return Translation{}, fmt.Errorf("translate VA %#x (level 2): %w", va, err)
	}
	if pde&ptePresent == 0 {
		return Translation{}, &NotPresentError{VA: va, Level: 2, Entry: pde}
	}
	if pde&pteLarge != 0 {
		return Translation{PA: pde&frameMask64&^0x1F_FFFF | va&0x1F_FFFF, Size: 2 << 20}, nil
	}
	pte, err := as.readEntry(ctx, pde&frameMask64+(va>>12&0x1FF)*8, 8)
	if err != nil {
		return Translation{}, fmt.Errorf("translate VA %#x (level 1): %w", va, err)
	}
	if pte&ptePresent == 0 {
		if pte&pteProto == 0 && pte&pteTransition != 0 {
			return Translation{PA: pte&frameMask64 | va&0xFFF, Size: 4096}, nil
		}
		return Translation{}, &NotPresentError{VA: va, Level: 1, Entry: pte}
	}
	return Translation{PA: pte&frameMask64 | va&0xFFF, Size: 4096}, nil
}

func (as *AddressSpace) walkX86(ctx context.Context, va uint64) (Translation, error) {
	pde, err := as.readEntry(ctx, as.dtb+(va>>22&0x3FF)*4, 4)
	if err != nil {
		return Translation{}, fmt.Errorf("translate VA %#x (level 2): %w", va, err)
	}
	pde &= 0xFFFF_FFFF
	if pde&ptePresent == 0 {
		return Translation{}, &NotPresentError{VA: va, Level: 2, Entry: pde}
	}
	if pde&pteLarge != 0 {
		// PSE-36 bits 20:13 extend the frame above 4 GiB.
		hi := (pde >> 13 & 0xFF) << 32
		return Translation{PA: hi | pde&0xFFC0_0000 | va&0x3F_FFFF, Size: 4 << 20}, nil
	}
	pte, err := as.readEntry(ctx, pde&0xFFFF_F000+(va>>12&0x3FF)*4, 4)
	if err != nil {
		return Translation{}, fmt.Errorf("translate VA %#x (level 1): %w", va, err)
	}
	pte &= 0xFFFF_FFFF
	if pte&ptePresent == 0 {
		if pte&pteProto == 0 && pte&pteTransition != 0 {
			return Translation{PA: pte&0xFFFF_F000 | va&0xFFF, Size: 4096}, nil
		}
		return Translation{}, &NotPresentError{VA: va, Level: 1, Entry: pte}
	}
	return Translation{PA: pte&0xFFFF_F000 | va&0xFFF, Size: 4096}, nil
}

// ReadVirtual implements machine.VirtualMemory: it reads page by page and fails on the first unmapped page.
func (as *AddressSpace) ReadVirtual(ctx context.Context, va uint64, buf []byte) error {
	for done := 0; done < len(buf); {
		cur := va + uint64(done)
		pa, err := as.Translate(ctx, cur)
		if err != nil {
			return fmt.Errorf("read %#x bytes at VA %#x: %w", len(buf), va, err)
		}
		n := int(4096 - cur&0xFFF)
		if n > len(buf)-done {
			n = len(buf) - done
		}
		if err := as.mem.ReadPhysical(ctx, pa, buf[done:done+n]); err != nil {
			return fmt.Errorf("read %#x bytes at VA %#x (PA %#x): %w", len(buf), va, pa, err)
		}
		done += n
	}
	return nil
}
