package dump

import (
	"encoding/binary"

	"github.com/kdstub/kdstub/internal/amd64"
)

// x64 CONTEXT offsets (winnt.h _CONTEXT, 0x4D0 bytes) and ContextFlags bits.
const (
	ctxFlags   = 0x30
	ctxMxCsr   = 0x34
	ctxSegCs   = 0x38 // then Ds, Es, Fs, Gs, Ss (u16 each)
	ctxEFlags  = 0x44
	ctxDr0     = 0x48 // Dr0..Dr3, Dr6, Dr7
	ctxRax     = 0x78 // Rax, Rcx, Rdx, Rbx, Rsp, Rbp, Rsi, Rdi, R8..R15
	ctxRip     = 0xF8
	ctxFltSave = 0x100 // XMM_SAVE_AREA32 (FXSAVE layout)

	contextAMD64          = 0x00100000
	contextControl        = contextAMD64 | 0x1
	contextInteger        = contextAMD64 | 0x2
	contextSegments       = contextAMD64 | 0x4
	contextFloatingPoint  = contextAMD64 | 0x8
	contextDebugRegisters = contextAMD64 | 0x10
)

// Registers decodes the header's CONTEXT record (the crashing CPU at bugcheck time) into the shared register
// file. Have reflects ContextFlags: GPR needs CONTROL|INTEGER|SEGMENTS, Debug needs DEBUG_REGISTERS and Float
// needs FLOATING_POINT. Control registers are not part of a CONTEXT; the kernel CR3 is Header.DTB.
func (h *Header) Registers() amd64.Registers {
	var r amd64.Registers
	c := h.Context
	if len(c) < ContextSize {
		return r
	}
	le := binary.LittleEndian
	flags := le.Uint32(c[ctxFlags:])
	if flags&contextAMD64 == 0 {
		return r
	}
	q := func(i int) uint64 { return le.Uint64(c[ctxRax+8*i:]) }
	r.RAX, r.RCX, r.RDX, r.RBX, r.RSP, r.RBP, r.RSI, r.RDI = q(0), q(1), q(2), q(3), q(4), q(5), q(6), q(7)
	r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15 = q(8), q(9), q(10), q(11), q(12), q(13), q(14), q(15)
	r.RIP = le.Uint64(c[ctxRip:])
	r.RFLAGS = uint64(le.Uint32(c[ctxEFlags:]))
	s := func(i int) uint16 { return le.Uint16(c[ctxSegCs+2*i:]) }
	r.CS, r.DS, r.ES, r.FS, r.GS, r.SS = s(0), s(1), s(2), s(3), s(4), s(5)
	if flags&(contextControl|contextInteger|contextSegments) == contextControl|contextInteger|contextSegments {
		r.Have |= amd64.HaveGPR
	}
	d := func(i int) uint64 { return le.Uint64(c[ctxDr0+8*i:]) }
	r.DR0, r.DR1, r.DR2, r.DR3, r.DR6, r.DR7 = d(0), d(1), d(2), d(3), d(4), d(5)
	if flags&contextDebugRegisters == contextDebugRegisters {
		r.Have |= amd64.HaveDebug
	}
	f := c[ctxFltSave:]
	r.FCW = le.Uint16(f[0x00:])
	r.FSW = le.Uint16(f[0x02:])
	r.FTW = f[0x04]
	r.FOP = le.Uint16(f[0x06:])
	r.FIP = le.Uint64(f[0x08:]) // x64 Windows saves with FXSAVE64: 64-bit instruction and data pointers
	r.FDP = le.Uint64(f[0x10:])
	r.MXCSR = le.Uint32(c[ctxMxCsr:])
	r.MXCSRMask = le.Uint32(f[0x1C:])
	for i := range r.ST {
		copy(r.ST[i][:], f[0x20+16*i:])
	}
	for i := range r.XMM {
		copy(r.XMM[i][:], f[0xA0+16*i:])
	}
	if flags&contextFloatingPoint == contextFloatingPoint {
		r.Have |= amd64.HaveFloat
	}
	return r
}
