package target

import (
	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/kdproto"
)

// debugRegs is the debugger's view of one CPU's debug registers. The debugger's hardware breakpoints become
// emulator watchpoints, so the guest's real DR0-7 are never written; reads return this shadow instead, as a
// debug-mode kernel would report what the debugger set.
type debugRegs struct {
	dr       [4]uint64
	dr6, dr7 uint64
}

// Architectural reset values: DR6 reads 0xFFFF0FF0 with no condition flagged; DR7 bit 10 always reads 1.
const (
	dr6Reset = 0xFFFF0FF0
	dr7Reset = 0x400
)

func resetDebugRegs() debugRegs { return debugRegs{dr6: dr6Reset, dr7: dr7Reset} }

// Segment selectors a running x64 Windows kernel has; served when the machine could not read the selectors
// (WinDbg rejects zero selectors in a context).
const (
	kernelCS = 0x10
	kernelSS = 0x18
	userDS   = 0x2B
	userFS   = 0x53
)

// contextFromRegisters builds the CONTEXT (ContextFlags CONTEXT_ALL) a debug-mode kernel would report.
func contextFromRegisters(r *amd64.Registers, d *debugRegs) *kdproto.Context {
	c := &kdproto.Context{
		ContextFlags: kdproto.ContextAll,
		MxCsr:        r.MXCSR,
		SegCs:        r.CS, SegDs: r.DS, SegEs: r.ES, SegFs: r.FS, SegGs: r.GS, SegSs: r.SS,
		EFlags: uint32(r.RFLAGS),
		Dr0:    d.dr[0], Dr1: d.dr[1], Dr2: d.dr[2], Dr3: d.dr[3], Dr6: d.dr6, Dr7: d.dr7,
		Rax: r.RAX, Rcx: r.RCX, Rdx: r.RDX, Rbx: r.RBX, Rsp: r.RSP, Rbp: r.RBP, Rsi: r.RSI, Rdi: r.RDI,
		R8: r.R8, R9: r.R9, R10: r.R10, R11: r.R11, R12: r.R12, R13: r.R13, R14: r.R14, R15: r.R15,
		Rip: r.RIP,
	}
	if !r.Have.Has(amd64.HaveGPR) || r.CS == 0 {
		c.SegCs, c.SegSs, c.SegDs, c.SegEs, c.SegGs, c.SegFs = kernelCS, kernelSS, userDS, userDS, userDS, userFS
	}
	f := &c.FltSave
	f.ControlWord, f.StatusWord, f.TagWord, f.ErrorOpcode = r.FCW, r.FSW, r.FTW, r.FOP
	f.ErrorOffset, f.DataOffset = uint32(r.FIP), uint32(r.FDP)
	f.MxCsr, f.MxCsrMask = r.MXCSR, r.MXCSRMask
	for i := range r.ST {
		copy(f.FloatRegisters[i][:10], r.ST[i][:])
	}
	f.XMMRegisters = r.XMM
	return c
}

// applyContext copies the fields that differ between old (what was served) and c (what the debugger wrote)
// into r and d, and returns the register groups that changed and whether the debug registers did. EFLAGS.TF is
// never written into the guest (the trace request is returned instead), so stepping leaves no trace there.
func applyContext(old, c *kdproto.Context, r *amd64.Registers, d *debugRegs) (groups amd64.Groups, drChanged, trace bool) {
	set64 := func(dst *uint64, o, n uint64, g amd64.Groups) {
		if o != n {
			*dst = n
			groups |= g
		}
	}
	set16 := func(dst *uint16, o, n uint16, g amd64.Groups) {
		if o != n {
			*dst = n
			groups |= g
		}
	}
	gpr := amd64.HaveGPR
	set64(&r.RAX, old.Rax, c.Rax, gpr)
	set64(&r.RCX, old.Rcx, c.Rcx, gpr)
	set64(&r.RDX, old.Rdx, c.Rdx, gpr)
	set64(&r.RBX, old.Rbx, c.Rbx, gpr)
	set64(&r.RSP, old.Rsp, c.Rsp, gpr)
	set64(&r.RBP, old.Rbp, c.Rbp, gpr)
	set64(&r.RSI, old.Rsi, c.Rsi, gpr)
	set64(&r.RDI, old.Rdi, c.Rdi, gpr)
	set64(&r.R8, old.R8, c.R8, gpr)
	set64(&r.R9, old.R9, c.R9, gpr)
	set64(&r.R10, old.R10, c.R10, gpr)
	set64(&r.R11, old.R11, c.R11, gpr)
	set64(&r.R12, old.R12, c.R12, gpr)
	set64(&r.R13, old.R13, c.R13, gpr)
	set64(&r.R14, old.R14, c.R14, gpr)
	set64(&r.R15, old.R15, c.R15, gpr)
	set64(&r.RIP, old.Rip, c.Rip, gpr)
	if c.EFlags&amd64.RFLAGSTF != 0 && old.EFlags&amd64.RFLAGSTF == 0 {
		trace = true
	}
	newFlags := uint64(c.EFlags&^amd64.RFLAGSTF) | r.RFLAGS&amd64.RFLAGSTF
	set64(&r.RFLAGS, uint64(old.EFlags&^amd64.RFLAGSTF)|r.RFLAGS&amd64.RFLAGSTF, newFlags, gpr)
	set16(&r.CS, old.SegCs, c.SegCs, gpr)
	set16(&r.DS, old.SegDs, c.SegDs, gpr)
	set16(&r.ES, old.SegEs, c.SegEs, gpr)
	set16(&r.FS, old.SegFs, c.SegFs, gpr)
	set16(&r.GS, old.SegGs, c.SegGs, gpr)
	set16(&r.SS, old.SegSs, c.SegSs, gpr)

	fl := amd64.HaveFloat
	of, nf := &old.FltSave, &c.FltSave
	set16(&r.FCW, of.ControlWord, nf.ControlWord, fl)
	set16(&r.FSW, of.StatusWord, nf.StatusWord, fl)
	set16(&r.FOP, of.ErrorOpcode, nf.ErrorOpcode, fl)
	if of.TagWord != nf.TagWord {
		r.FTW, groups = nf.TagWord, groups|fl
	}
	if old.MxCsr != c.MxCsr {
		r.MXCSR, groups = c.MxCsr, groups|fl
	} else if of.MxCsr != nf.MxCsr {
		r.MXCSR, groups = nf.MxCsr, groups|fl
	}
	for i := range r.ST {
		if of.FloatRegisters[i] != nf.FloatRegisters[i] {
			copy(r.ST[i][:], nf.FloatRegisters[i][:10])
			groups |= fl
		}
	}
	for i := range r.XMM {
		if of.XMMRegisters[i] != nf.XMMRegisters[i] {
			r.XMM[i] = nf.XMMRegisters[i]
			groups |= fl
		}
	}

	nd := debugRegs{dr: [4]uint64{c.Dr0, c.Dr1, c.Dr2, c.Dr3}, dr6: c.Dr6, dr7: c.Dr7}
	od := debugRegs{dr: [4]uint64{old.Dr0, old.Dr1, old.Dr2, old.Dr3}, dr6: old.Dr6, dr7: old.Dr7}
	if nd != od {
		for i := range nd.dr {
			if nd.dr[i] != od.dr[i] {
				d.dr[i] = nd.dr[i]
			}
		}
		if nd.dr6 != od.dr6 {
			d.dr6 = nd.dr6
		}
		if nd.dr7 != od.dr7 {
			d.dr7 = nd.dr7
		}
		drChanged = true
	}
	return groups, drChanged, trace
}

// kspecialFromRegisters builds KSPECIAL_REGISTERS from the live vCPU (never the stale KPRCB copy). MSRs the
// emulator does not expose (STAR, LSTAR, CSTAR, SFMASK) read as 0.
func kspecialFromRegisters(r *amd64.Registers, d *debugRegs) *kdproto.KSpecialRegisters {
	k := &kdproto.KSpecialRegisters{
		Cr0: r.CR0, Cr2: r.CR2, Cr3: r.CR3, Cr4: r.CR4, Cr8: r.CR8,
		KernelDr0: d.dr[0], KernelDr1: d.dr[1], KernelDr2: d.dr[2], KernelDr3: d.dr[3],
		KernelDr6: d.dr6, KernelDr7: d.dr7,
		Tr: r.TR, Ldtr: r.LDTR, MxCsr: r.MXCSR,
		MsrGsBase: r.GSBase, MsrGsSwap: r.KernelGSBase, MsrFsBase: r.FSBase,
	}
	k.Gdtr.Base, k.Gdtr.Limit = r.GDTRBase, r.GDTRLimit
	k.Idtr.Base, k.Idtr.Limit = r.IDTRBase, r.IDTRLimit
	if r.CR4&(1<<18) != 0 { // OSXSAVE: x87|SSE|AVX is what Windows enables
		k.Xcr0 = 7
	}
	return k
}

// applyKSpecial copies the fields that differ between old and n into r and d.
func applyKSpecial(old, n *kdproto.KSpecialRegisters, r *amd64.Registers, d *debugRegs) (groups amd64.Groups, drChanged bool) {
	set := func(dst *uint64, o, v uint64, g amd64.Groups) {
		if o != v {
			*dst = v
			groups |= g
		}
	}
	set(&r.CR0, old.Cr0, n.Cr0, amd64.HaveControl)
	set(&r.CR2, old.Cr2, n.Cr2, amd64.HaveControl)
	set(&r.CR3, old.Cr3, n.Cr3, amd64.HaveControl)
	set(&r.CR4, old.Cr4, n.Cr4, amd64.HaveControl)
	set(&r.CR8, old.Cr8, n.Cr8, amd64.HaveControl)
	set(&r.GSBase, old.MsrGsBase, n.MsrGsBase, amd64.HaveBases)
	set(&r.KernelGSBase, old.MsrGsSwap, n.MsrGsSwap, amd64.HaveBases)
	set(&r.FSBase, old.MsrFsBase, n.MsrFsBase, amd64.HaveBases)
	ndr := [4]uint64{n.KernelDr0, n.KernelDr1, n.KernelDr2, n.KernelDr3}
	odr := [4]uint64{old.KernelDr0, old.KernelDr1, old.KernelDr2, old.KernelDr3}
	for i := range ndr {
		if ndr[i] != odr[i] {
			d.dr[i], drChanged = ndr[i], true
		}
	}
	if n.KernelDr6 != old.KernelDr6 {
		d.dr6, drChanged = n.KernelDr6, true
	}
	if n.KernelDr7 != old.KernelDr7 {
		d.dr7, drChanged = n.KernelDr7, true
	}
	return groups, drChanged
}
