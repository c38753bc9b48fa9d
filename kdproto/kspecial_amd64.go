package kdproto

import "fmt"

// KSPECIAL_REGISTERS sizes by Windows version (kd-protocol.md §5.2): WinDbg picks the length it asks for
// through ReadControlSpace(2), so the same structure is served truncated to the form the guest uses.
const (
	KSpecialSizeWin7  = 0xD8 // ends at MsrSyscallMask
	KSpecialSizeWin8  = 0xE0 // adds Xcr0
	KSpecialSizeWin10 = 0xF0 // adds MsrFsBase, SpecialPadding0
)

// KSPECIAL_REGISTERS offsets (kd-protocol.md §5.2 table).
const (
	offKSCr0            = 0x00
	offKSKernelDr0      = 0x20
	offKSKernelDr7      = 0x48
	offKSGdtr           = 0x50
	offKSIdtr           = 0x60
	offKSTr             = 0x70
	offKSMxCsr          = 0x74
	offKSDebugControl   = 0x78
	offKSCr8            = 0xA0
	offKSMsrGsBase      = 0xA8
	offKSMsrSyscallMask = 0xD0
	offKSXcr0           = 0xD8
	offKSMsrFsBase      = 0xE0
)

// DescriptorTable is the KDESCRIPTOR used for Gdtr/Idtr: three padding words, the limit, the base.
type DescriptorTable struct {
	Pad   [3]uint16 `kd:"-"`
	Limit uint16    `kd:"hex"`
	Base  uint64    `kd:"addr"`
}

// KSpecialRegisters is the AMD64 KSPECIAL_REGISTERS in its largest (Win10+, 0xF0) form.
type KSpecialRegisters struct {
	Cr0, Cr2, Cr3, Cr4                          uint64 // 0x00..0x18
	KernelDr0, KernelDr1, KernelDr2, KernelDr3  uint64 // 0x20..0x38
	KernelDr6, KernelDr7                        uint64 // 0x40, 0x48
	Gdtr                                        DescriptorTable
	Idtr                                        DescriptorTable
	Tr, Ldtr                                    uint16 // 0x70, 0x72
	MxCsr                                       uint32 // 0x74
	DebugControl                                uint64 // 0x78
	LastBranchToRip, LastBranchFromRip          uint64 // 0x80, 0x88
	LastExceptionToRip, LastExceptionFromRip    uint64 // 0x90, 0x98
	Cr8                                         uint64 // 0xA0
	MsrGsBase, MsrGsSwap                        uint64 // 0xA8, 0xB0
	MsrStar, MsrLStar, MsrCStar, MsrSyscallMask uint64 // 0xB8..0xD0
	Xcr0                                        uint64 // 0xD8 (Win8+)
	MsrFsBase                                   uint64 // 0xE0 (Win10+)
	SpecialPadding0                             uint64 // 0xE8 (Win10+)
}

// DecodeKSpecialRegisters parses one of the three forms (0xD8, 0xE0 or 0xF0 bytes); fields beyond the form
// stay zero. It returns the structure and the form's size.
func DecodeKSpecialRegisters(b []byte) (*KSpecialRegisters, int, error) {
	switch len(b) {
	case KSpecialSizeWin7, KSpecialSizeWin8, KSpecialSizeWin10:
	default:
		if len(b) < KSpecialSizeWin7 {
			return nil, 0, &ShortError{What: "KSPECIAL_REGISTERS", Need: KSpecialSizeWin7, Have: len(b)}
		}
		return nil, 0, &MalformedError{What: "KSPECIAL_REGISTERS",
			Reason: fmt.Sprintf("%#x bytes, want 0xd8, 0xe0 or 0xf0", len(b))}
	}
	var full [KSpecialSizeWin10]byte
	copy(full[:], b)
	k := &KSpecialRegisters{}
	if err := decodeFixed(full[:], k, "KSPECIAL_REGISTERS"); err != nil {
		return nil, 0, err
	}
	return k, len(b), nil
}

// Encode returns the first size bytes of the 0xF0-byte encoding, so a reply honours the length WinDbg asked
// for (ReadControlSpace clamps to the natural size of the guest's form). size must be in 0..0xF0.
func (k *KSpecialRegisters) Encode(size int) ([]byte, error) {
	if size < 0 || size > KSpecialSizeWin10 {
		return nil, fmt.Errorf("encode KSPECIAL_REGISTERS: size %#x outside 0..0xf0", size)
	}
	b, err := appendFixed(make([]byte, 0, KSpecialSizeWin10), k, "KSPECIAL_REGISTERS")
	if err != nil {
		return nil, err
	}
	return b[:size], nil
}

// MarshalBinary encodes the full 0xF0-byte (Win10+) form.
func (k *KSpecialRegisters) MarshalBinary() ([]byte, error) { return k.Encode(KSpecialSizeWin10) }
