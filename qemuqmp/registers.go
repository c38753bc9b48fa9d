package qemuqmp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/qemuqmp/rsp"
)

// regField binds a target.xml register name to a field of amd64.Registers.
type regField struct {
	name  string
	group amd64.Groups
	get   func(r *amd64.Registers) []byte
	set   func(r *amd64.Registers, b []byte)
}

func u64Field(name string, g amd64.Groups, p func(r *amd64.Registers) *uint64) regField {
	return regField{name, g,
		func(r *amd64.Registers) []byte { return binary.LittleEndian.AppendUint64(nil, *p(r)) },
		func(r *amd64.Registers, b []byte) { *p(r) = leN(b) }}
}

func u16Field(name string, g amd64.Groups, p func(r *amd64.Registers) *uint16) regField {
	return regField{name, g,
		func(r *amd64.Registers) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(*p(r))) },
		func(r *amd64.Registers, b []byte) { *p(r) = uint16(leN(b)) }}
}

func leN(b []byte) uint64 {
	var v uint64
	for i := min(len(b), 8) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// regFields maps QEMU's x86-64 gdb registers (i386-64bit.xml) onto amd64.Registers. ftag, fiseg, fioff, foseg,
// fooff and fop are left out: QEMU 7.2's gdbstub returns zero for them. FTW comes from HMP instead.
var regFields = func() []regField {
	gpr := []struct {
		n string
		p func(r *amd64.Registers) *uint64
	}{
		{"rax", func(r *amd64.Registers) *uint64 { return &r.RAX }}, {"rbx", func(r *amd64.Registers) *uint64 { return &r.RBX }},
		{"rcx", func(r *amd64.Registers) *uint64 { return &r.RCX }}, {"rdx", func(r *amd64.Registers) *uint64 { return &r.RDX }},
		{"rsi", func(r *amd64.Registers) *uint64 { return &r.RSI }}, {"rdi", func(r *amd64.Registers) *uint64 { return &r.RDI }},
		{"rbp", func(r *amd64.Registers) *uint64 { return &r.RBP }}, {"rsp", func(r *amd64.Registers) *uint64 { return &r.RSP }},
		{"r8", func(r *amd64.Registers) *uint64 { return &r.R8 }}, {"r9", func(r *amd64.Registers) *uint64 { return &r.R9 }},
		{"r10", func(r *amd64.Registers) *uint64 { return &r.R10 }}, {"r11", func(r *amd64.Registers) *uint64 { return &r.R11 }},
		{"r12", func(r *amd64.Registers) *uint64 { return &r.R12 }}, {"r13", func(r *amd64.Registers) *uint64 { return &r.R13 }},
		{"r14", func(r *amd64.Registers) *uint64 { return &r.R14 }}, {"r15", func(r *amd64.Registers) *uint64 { return &r.R15 }},
		{"rip", func(r *amd64.Registers) *uint64 { return &r.RIP }},
	}
	var f []regField
	for _, g := range gpr {
		f = append(f, u64Field(g.n, amd64.HaveGPR, g.p))
	}
	f = append(f,
		regField{"eflags", amd64.HaveGPR,
			func(r *amd64.Registers) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(r.RFLAGS)) },
			func(r *amd64.Registers, b []byte) { r.RFLAGS = leN(b) }},
		u16Field("cs", amd64.HaveGPR, func(r *amd64.Registers) *uint16 { return &r.CS }),
		u16Field("ss", amd64.HaveGPR, func(r *amd64.Registers) *uint16 { return &r.SS }),
		u16Field("ds", amd64.HaveGPR, func(r *amd64.Registers) *uint16 { return &r.DS }),
		u16Field("es", amd64.HaveGPR, func(r *amd64.Registers) *uint16 { return &r.ES }),
		u16Field("fs", amd64.HaveGPR, func(r *amd64.Registers) *uint16 { return &r.FS }),
		u16Field("gs", amd64.HaveGPR, func(r *amd64.Registers) *uint16 { return &r.GS }),
		u64Field("fs_base", amd64.HaveBases, func(r *amd64.Registers) *uint64 { return &r.FSBase }),
		u64Field("gs_base", amd64.HaveBases, func(r *amd64.Registers) *uint64 { return &r.GSBase }),
		u64Field("k_gs_base", amd64.HaveBases, func(r *amd64.Registers) *uint64 { return &r.KernelGSBase }),
		u64Field("cr0", amd64.HaveControl, func(r *amd64.Registers) *uint64 { return &r.CR0 }),
		u64Field("cr2", amd64.HaveControl, func(r *amd64.Registers) *uint64 { return &r.CR2 }),
		u64Field("cr3", amd64.HaveControl, func(r *amd64.Registers) *uint64 { return &r.CR3 }),
		u64Field("cr4", amd64.HaveControl, func(r *amd64.Registers) *uint64 { return &r.CR4 }),
		u64Field("cr8", amd64.HaveControl, func(r *amd64.Registers) *uint64 { return &r.CR8 }),
		u64Field("efer", amd64.HaveControl, func(r *amd64.Registers) *uint64 { return &r.EFER }),
		u16Field("fctrl", amd64.HaveFloat, func(r *amd64.Registers) *uint16 { return &r.FCW }),
		u16Field("fstat", amd64.HaveFloat, func(r *amd64.Registers) *uint16 { return &r.FSW }),
		regField{"mxcsr", amd64.HaveFloat,
			func(r *amd64.Registers) []byte { return binary.LittleEndian.AppendUint32(nil, r.MXCSR) },
			func(r *amd64.Registers, b []byte) { r.MXCSR = uint32(leN(b)) }},
	)
	for i := range 8 {
		f = append(f, regField{"st" + strconv.Itoa(i), amd64.HaveFloat,
			func(r *amd64.Registers) []byte { return append([]byte(nil), r.ST[i][:]...) },
			func(r *amd64.Registers, b []byte) { copy(r.ST[i][:], b) }})
	}
	for i := range 16 {
		f = append(f, regField{"xmm" + strconv.Itoa(i), amd64.HaveFloat,
			func(r *amd64.Registers) []byte { return append([]byte(nil), r.XMM[i][:]...) },
			func(r *amd64.Registers, b []byte) { copy(r.XMM[i][:], b) }})
	}
	return f
}()

// decodeG fills r from a g image using the register table; only groups whose every register is present in
// the table are claimed in r.Have.
func decodeG(tab *rsp.RegisterTable, g []byte, r *amd64.Registers) {
	missing := amd64.Groups(0)
	for _, f := range regFields {
		reg, ok := tab.Lookup(f.name)
		if !ok || reg.Offset+reg.Bits/8 > len(g) {
			missing |= f.group
			continue
		}
		f.set(r, g[reg.Offset:reg.Offset+reg.Bits/8])
	}
	r.Have |= (amd64.HaveGPR | amd64.HaveBases | amd64.HaveControl | amd64.HaveFloat) &^ missing
}

// Registers reads cpu's registers: the gdbstub gives general, segment-base, control and x87/SSE registers;
// HMP "info registers" adds GDTR/IDTR, LDTR/TR and the debug registers. Have names what was really read.
// The VM must be stopped.
func (m *Machine) Registers(ctx context.Context, cpu int) (amd64.Registers, error) {
	t, err := m.thread(cpu)
	if err != nil {
		return amd64.Registers{}, err
	}
	if err := m.alive(); err != nil {
		return amd64.Registers{}, err
	}
	var r amd64.Registers
	g, err := m.gdb.ReadAllRegisters(ctx, t)
	if err != nil {
		return r, m.wrap(fmt.Errorf("registers of cpu %d: %w", cpu, err))
	}
	decodeG(m.gdb.Registers(), g, &r)
	hr, err := m.hmpRegisters(ctx, cpu)
	if err != nil {
		m.log.Warn("info registers failed; descriptor and debug registers unknown", "cpu", cpu, "err", err)
		return r, m.wrap(err)
	}
	if hr.Have.Has(amd64.HaveDescriptors) {
		r.GDTRBase, r.GDTRLimit, r.IDTRBase, r.IDTRLimit, r.LDTR, r.TR = hr.GDTRBase, hr.GDTRLimit, hr.IDTRBase, hr.IDTRLimit, hr.LDTR, hr.TR
		r.Have |= amd64.HaveDescriptors
	}
	if hr.Have.Has(amd64.HaveDebug) {
		r.DR0, r.DR1, r.DR2, r.DR3, r.DR6, r.DR7 = hr.DR0, hr.DR1, hr.DR2, hr.DR3, hr.DR6, hr.DR7
		r.Have |= amd64.HaveDebug
	}
	r.FTW = hr.FTW
	r.MXCSRMask = 0xFFFF // what QEMU's FXSAVE reports for its SSE model
	return r, nil
}

// SetRegisters writes the groups in which of regs to cpu, sending P only for registers whose value differs
// from the current one. Descriptor and debug registers cannot be written through QEMU 7.2 (neither the
// gdbstub nor HMP can); asking to change them returns ErrUnsupported and writes nothing.
func (m *Machine) SetRegisters(ctx context.Context, cpu int, regs amd64.Registers, which amd64.Groups) error {
	cur, err := m.Registers(ctx, cpu)
	if err != nil {
		return err
	}
	if which&amd64.HaveDescriptors != 0 && (cur.GDTRBase != regs.GDTRBase || cur.GDTRLimit != regs.GDTRLimit ||
		cur.IDTRBase != regs.IDTRBase || cur.IDTRLimit != regs.IDTRLimit || cur.LDTR != regs.LDTR || cur.TR != regs.TR) {
		return fmt.Errorf("set descriptor registers of cpu %d: %w", cpu, ErrUnsupported)
	}
	if which&amd64.HaveDebug != 0 && (cur.DR0 != regs.DR0 || cur.DR1 != regs.DR1 || cur.DR2 != regs.DR2 ||
		cur.DR3 != regs.DR3 || cur.DR6 != regs.DR6 || cur.DR7 != regs.DR7) {
		return fmt.Errorf("set debug registers of cpu %d: %w (use emulator breakpoints)", cpu, ErrUnsupported)
	}
	changes := map[string][]byte{}
	for _, f := range regFields {
		if which&f.group == 0 {
			continue
		}
		want, have := f.get(&regs), f.get(&cur)
		if !bytes.Equal(want, have) {
			changes[f.name] = want
		}
	}
	if len(changes) == 0 {
		return nil
	}
	t, _ := m.thread(cpu)
	// Registers narrower in the table than in our encoding (eflags, selectors, fctrl are 32-bit) already
	// match: the get functions produce the table's width.
	if err := m.gdb.WriteRegisters(ctx, t, changes); err != nil {
		return m.wrap(fmt.Errorf("set registers of cpu %d: %w", cpu, err))
	}
	return nil
}

type hmpEntry struct {
	stop uint64
	regs amd64.Registers
}

// hmpRegisters returns HMP "info registers" for cpu, cached until the next stop: the HMP round trip costs
// several times a gdbstub one, and descriptor and debug registers cannot change while the VM stays stopped.
func (m *Machine) hmpRegisters(ctx context.Context, cpu int) (amd64.Registers, error) {
	seq := m.gdb.StopCount()
	m.mu.Lock()
	e, ok := m.hmpCache[cpu]
	m.mu.Unlock()
	if ok && e.stop == seq && !m.gdb.Running() {
		return e.regs, nil
	}
	h, err := m.qmp.InfoRegisters(ctx, cpu)
	if err != nil {
		return amd64.Registers{}, err
	}
	if m.gdb.StopCount() == seq && !m.gdb.Running() {
		m.mu.Lock()
		m.hmpCache[cpu] = hmpEntry{stop: seq, regs: h.Regs}
		m.mu.Unlock()
	}
	return h.Regs, nil
}
