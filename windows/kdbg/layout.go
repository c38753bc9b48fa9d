// Package kdbg holds the layout of KDDEBUGGER_DATA64 ('KDBG') and recovers its plaintext when Windows 8+ x64
// has encoded it in place (no debugger at boot), without symbols.
//
// The layout is not a PDB type (it is absent from every ISF); offsets follow wdbgexts.h as summarised in
// windows-internals §4.2.
package kdbg

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Tag is 'KDBG' as the little-endian ULONG at +0x10.
const Tag = 0x4742444B

// Header and field offsets (windows-internals §4.2).
const (
	OffListFlink                        = 0x000
	OffListBlink                        = 0x008
	OffOwnerTag                         = 0x010
	OffSize                             = 0x014
	OffKernBase                         = 0x018
	OffPsLoadedModuleList               = 0x048
	OffPsActiveProcessHead              = 0x050
	OffPspCidTable                      = 0x058
	OffMmPfnDatabase                    = 0x0C0
	OffNtBuildLab                       = 0x208
	OffKiProcessorBlock                 = 0x218
	OffOffsetKThreadNextProcessor       = 0x298
	OffOffsetKThreadTeb                 = 0x29A
	OffOffsetKThreadKernelStack         = 0x29C
	OffOffsetKThreadInitialStack        = 0x29E
	OffOffsetKThreadApcProcess          = 0x2A0
	OffOffsetKThreadState               = 0x2A2
	OffSizeEProcess                     = 0x2A8
	OffOffsetEprocessPeb                = 0x2AA
	OffOffsetEprocessParentCID          = 0x2AC
	OffOffsetEprocessDirectoryTableBase = 0x2AE
	OffSizePrcb                         = 0x2B0
	OffOffsetPrcbCurrentThread          = 0x2B4
	OffOffsetPrcbNumber                 = 0x2BE
	OffSizeEThread                      = 0x2C0
	OffSizePcr                          = 0x2E0
	OffOffsetPcrSelfPcr                 = 0x2E2
	OffOffsetPcrCurrentPrcb             = 0x2E4
	OffOffsetPcrContainedPrcb           = 0x2E6
	OffOffsetPrcbProcStateSpecialReg    = 0x2F2
	OffOffsetPrcbContext                = 0x338
	OffOffsetKThreadStackLimit          = 0x340
	OffOffsetKThreadStackBase           = 0x344
	OffPteBase                          = 0x360
)

// KnownSizes are the Size values shipped by Windows versions with x64 encoding (Win8 … Win11), smallest first.
var KnownSizes = [...]uint32{0x340, 0x360, 0x368, 0x380, 0x390, 0x3A0, 0x3A8}

// MaxSize bounds the block length accepted from guest memory.
const MaxSize = 0x1000

// ErrShort is wrapped when a block is too short for a field.
var ErrShort = errors.New("KDBG block too short")

// Block is a plaintext KDBG.
type Block []byte

// U64 reads a ULONG64 field; fields beyond the block read as an error.
func (b Block) U64(off int) (uint64, error) {
	if off < 0 || off+8 > len(b) {
		return 0, fmt.Errorf("KDBG field at %#x: %w (%#x bytes)", off, ErrShort, len(b))
	}
	return binary.LittleEndian.Uint64(b[off:]), nil
}

// U16 reads a USHORT field.
func (b Block) U16(off int) (uint16, error) {
	if off < 0 || off+2 > len(b) {
		return 0, fmt.Errorf("KDBG field at %#x: %w (%#x bytes)", off, ErrShort, len(b))
	}
	return binary.LittleEndian.Uint16(b[off:]), nil
}

// Must64 is U64 with absent fields reading as 0, for display.
func (b Block) Must64(off int) uint64 { v, _ := b.U64(off); return v }

// Must16 is U16 with absent fields reading as 0, for display.
func (b Block) Must16(off int) uint16 { v, _ := b.U16(off); return v }

// Tag is the OwnerTag.
func (b Block) Tag() uint32 {
	if len(b) < 0x18 {
		return 0
	}
	return binary.LittleEndian.Uint32(b[OffOwnerTag:])
}

// Size is the header's Size field.
func (b Block) Size() uint32 {
	if len(b) < 0x18 {
		return 0
	}
	return binary.LittleEndian.Uint32(b[OffSize:])
}

// KernBase is the ntoskrnl base.
func (b Block) KernBase() uint64 { return b.Must64(OffKernBase) }

// PsLoadedModuleList is the address of the module list head.
func (b Block) PsLoadedModuleList() uint64 { return b.Must64(OffPsLoadedModuleList) }

// PsActiveProcessHead is the address of the process list head.
func (b Block) PsActiveProcessHead() uint64 { return b.Must64(OffPsActiveProcessHead) }

// KiProcessorBlock is the address of the KPRCB pointer array.
func (b Block) KiProcessorBlock() uint64 { return b.Must64(OffKiProcessorBlock) }

// PteBase is the self-map PTE base (Win10 1607+).
func (b Block) PteBase() uint64 { return b.Must64(OffPteBase) }
