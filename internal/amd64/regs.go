// Package amd64 holds the x86-64 register file as a plain value shared by the layers that move it around.
//
// qemuqmp fills it from the gdbstub and HMP, windows reads it for discovery and converts it to and from the
// KD CONTEXT / KSPECIAL_REGISTERS shapes. Keeping it here, in a package that knows neither QEMU nor Windows,
// lets both sides agree on one type without either importing the other.
package amd64

// Registers is one vCPU's architectural state as far as the debugger cares.
//
// Fields that a source cannot provide stay zero and their group flag in Have stays clear, so consumers can
// tell "zero" from "unknown" (the gdbstub has no IDTR or debug registers; HMP has them).
type Registers struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64

	CS, SS, DS, ES, FS, GS uint16 // selectors
	FSBase, GSBase         uint64
	KernelGSBase           uint64 // IA32_KERNEL_GS_BASE (swapgs partner)

	CR0, CR2, CR3, CR4, CR8 uint64
	EFER                    uint64

	GDTRBase  uint64
	GDTRLimit uint16
	IDTRBase  uint64
	IDTRLimit uint16
	LDTR, TR  uint16 // selectors

	DR0, DR1, DR2, DR3, DR6, DR7 uint64

	// x87/SSE state in FXSAVE terms.
	FCW, FSW  uint16
	FTW       uint8 // abridged tag word as FXSAVE stores it
	FOP       uint16
	FIP, FDP  uint64
	MXCSR     uint32
	MXCSRMask uint32
	ST        [8][10]byte // ST0..ST7, 80-bit
	XMM       [16][16]byte

	Have Groups
}

// Groups says which groups of fields in Registers were actually read from the machine.
type Groups uint32

const (
	HaveGPR         Groups = 1 << iota // general purpose, RIP, RFLAGS, selectors
	HaveBases                          // FSBase, GSBase, KernelGSBase
	HaveControl                        // CR0, CR2, CR3, CR4, CR8, EFER
	HaveDescriptors                    // GDTR, IDTR, LDTR, TR
	HaveDebug                          // DR0-3, DR6, DR7
	HaveFloat                          // x87 and SSE
)

// Has reports whether every group in g was read.
func (g Groups) Has(want Groups) bool { return g&want == want }

// Well-known bits the layers above test.
const (
	CR0PG      = 1 << 31
	CR4PAE     = 1 << 5
	CR4LA57    = 1 << 12
	EFERLMA    = 1 << 10
	RFLAGSTF   = 1 << 8
	RFLAGSIF   = 1 << 9
	DR6BS      = 1 << 14
	DR7Enabled = 0xFF // L0..G3
)

// LongMode reports whether the CPU runs 64-bit code with 4- or 5-level paging.
func (r *Registers) LongMode() bool { return r.EFER&EFERLMA != 0 }

// PagingLevels reports 5, 4, 3 (PAE) or 2 (classic 32-bit), or 0 when paging is off.
func (r *Registers) PagingLevels() int {
	switch {
	case r.CR0&CR0PG == 0:
		return 0
	case r.LongMode() && r.CR4&CR4LA57 != 0:
		return 5
	case r.LongMode():
		return 4
	case r.CR4&CR4PAE != 0:
		return 3
	default:
		return 2
	}
}
