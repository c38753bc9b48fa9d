package qmp

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/kdstub/kdstub/internal/amd64"
)

// ErrBadHMP wraps failures to parse HMP text.
var ErrBadHMP = errors.New("qmp: unexpected HMP output")

// CPURegisters is one CPU's block of "info registers". Regs.Have names only the groups the text covered
// completely: HMP prints no CR8 and no KernelGSBase, so Control and Bases are never claimed from it.
type CPURegisters struct {
	CPU  int
	Regs amd64.Registers
}

// Bounds for hostile input.
const (
	maxHMPLines = 1 << 16
	maxCPUs     = 4096
)

// ParseInfoRegisters parses HMP "info registers" output (one or more "CPU#n" blocks; a single block without a
// header is CPU 0) into register files, including what the gdbstub cannot give: GDTR/IDTR base and limit,
// LDTR/TR selectors and DR0-3/6/7.
func ParseInfoRegisters(text string) ([]CPURegisters, error) {
	var out []CPURegisters
	var cur *CPURegisters
	var seen map[string]bool
	finish := func() {
		if cur == nil {
			return
		}
		r := &cur.Regs
		if all(seen, "RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP", "R8", "R9", "R10", "R11", "R12", "R13",
			"R14", "R15", "RIP", "RFL", "ES", "CS", "SS", "DS", "FS", "GS") {
			r.Have |= amd64.HaveGPR
		}
		if all(seen, "GDT", "IDT", "LDT", "TR") {
			r.Have |= amd64.HaveDescriptors
		}
		if all(seen, "DR0", "DR1", "DR2", "DR3", "DR6", "DR7") {
			r.Have |= amd64.HaveDebug
		}
		out = append(out, *cur)
		cur = nil
	}
	start := func(cpu int) {
		finish()
		cur = &CPURegisters{CPU: cpu}
		seen = map[string]bool{}
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 0; sc.Scan(); n++ {
		if n > maxHMPLines {
			return nil, fmt.Errorf("more than %d lines: %w", maxHMPLines, ErrBadHMP)
		}
		line := strings.TrimRight(sc.Text(), " \r")
		if line == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "CPU#"); ok {
			idx, err := strconv.Atoi(strings.TrimSpace(rest))
			if err != nil || idx < 0 || idx >= maxCPUs || len(out) >= maxCPUs {
				return nil, fmt.Errorf("header %q: %w", line, ErrBadHMP)
			}
			start(idx)
			continue
		}
		if cur == nil {
			start(0)
		}
		if err := parseRegLine(line, &cur.Regs, seen); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrBadHMP)
	}
	finish()
	if len(out) == 0 {
		return nil, fmt.Errorf("no register block: %w", ErrBadHMP)
	}
	for _, c := range out {
		if c.Regs.Have == 0 {
			return nil, fmt.Errorf("CPU#%d: no recognised registers: %w", c.CPU, ErrBadHMP)
		}
	}
	return out, nil
}

func all(seen map[string]bool, names ...string) bool {
	for _, n := range names {
		if !seen[n] {
			return false
		}
	}
	return true
}

// segment lines: "CS =0008 0000000000000000 ffffffff 00af9a00 DPL=0 CS64 [-R-]", "GDT=     base limit".
var segNames = []string{"ES", "CS", "SS", "DS", "FS", "GS", "LDT", "TR", "GDT", "IDT"}

func parseRegLine(line string, r *amd64.Registers, seen map[string]bool) error {
	for _, s := range segNames {
		rest, ok := strings.CutPrefix(line, s)
		if !ok {
			continue
		}
		rest = strings.TrimLeft(rest, " ")
		if !strings.HasPrefix(rest, "=") {
			continue
		}
		return parseSegment(s, strings.Fields(rest[1:]), r, seen)
	}
	// generic "NAME=hex" tokens; "R8 =..." has a space before '='
	fields := strings.Fields(strings.ReplaceAll(line, " =", "="))
	for i := 0; i < len(fields); i++ {
		name, val, ok := strings.Cut(fields[i], "=")
		if !ok || name == "" {
			continue
		}
		switch {
		case strings.HasPrefix(name, "FPR") && len(name) == 4:
			// "FPR0=mantissa exponent"
			if i+1 >= len(fields) {
				return fmt.Errorf("%s without exponent: %w", name, ErrBadHMP)
			}
			idx := int(name[3] - '0')
			mant, err1 := strconv.ParseUint(val, 16, 64)
			exp, err2 := strconv.ParseUint(fields[i+1], 16, 16)
			if idx < 0 || idx > 7 || err1 != nil || err2 != nil {
				return fmt.Errorf("%s=%s %s: %w", name, val, fields[i+1], ErrBadHMP)
			}
			for b := 0; b < 8; b++ {
				r.ST[idx][b] = byte(mant >> (8 * b))
			}
			r.ST[idx][8], r.ST[idx][9] = byte(exp), byte(exp>>8)
			seen[name] = true
			i++
			continue
		case strings.HasPrefix(name, "XMM") && len(name) == 5:
			// "XMM00=high low"
			idx, err := strconv.Atoi(name[3:])
			if i+1 >= len(fields) || err != nil || idx < 0 || idx > 15 {
				return fmt.Errorf("%s: %w", fields[i], ErrBadHMP)
			}
			hi, err1 := strconv.ParseUint(val, 16, 64)
			lo, err2 := strconv.ParseUint(fields[i+1], 16, 64)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("%s=%s %s: %w", name, val, fields[i+1], ErrBadHMP)
			}
			for b := 0; b < 8; b++ {
				r.XMM[idx][b] = byte(lo >> (8 * b))
				r.XMM[idx][8+b] = byte(hi >> (8 * b))
			}
			seen[name] = true
			i++
			continue
		}
		dst := regField(r, name)
		if dst == nil {
			continue // CPL, II, A20, SMM, HLT and anything newer
		}
		v, err := strconv.ParseUint(val, 16, 64)
		if err != nil {
			return fmt.Errorf("%s=%q: %w", name, val, ErrBadHMP)
		}
		dst(v)
		seen[name] = true
	}
	return nil
}

func regField(r *amd64.Registers, name string) func(uint64) {
	p := map[string]*uint64{
		"RAX": &r.RAX, "RBX": &r.RBX, "RCX": &r.RCX, "RDX": &r.RDX, "RSI": &r.RSI, "RDI": &r.RDI, "RBP": &r.RBP,
		"RSP": &r.RSP, "R8": &r.R8, "R9": &r.R9, "R10": &r.R10, "R11": &r.R11, "R12": &r.R12, "R13": &r.R13,
		"R14": &r.R14, "R15": &r.R15, "RIP": &r.RIP, "RFL": &r.RFLAGS, "CR0": &r.CR0, "CR2": &r.CR2, "CR3": &r.CR3,
		"CR4": &r.CR4, "DR0": &r.DR0, "DR1": &r.DR1, "DR2": &r.DR2, "DR3": &r.DR3, "DR6": &r.DR6, "DR7": &r.DR7,
		"EFER": &r.EFER,
		// 32-bit format, printed while the CPU is not in long mode
		"EAX": &r.RAX, "EBX": &r.RBX, "ECX": &r.RCX, "EDX": &r.RDX, "ESI": &r.RSI, "EDI": &r.RDI, "EBP": &r.RBP,
		"ESP": &r.RSP, "EIP": &r.RIP, "EFL": &r.RFLAGS,
	}[name]
	if p != nil {
		return func(v uint64) { *p = v }
	}
	switch name {
	case "FCW":
		return func(v uint64) { r.FCW = uint16(v) }
	case "FSW":
		return func(v uint64) { r.FSW = uint16(v) }
	case "FTW":
		return func(v uint64) { r.FTW = uint8(v) } // QEMU prints the abridged (FXSAVE) tag byte
	case "MXCSR":
		return func(v uint64) { r.MXCSR = uint32(v) }
	}
	return nil
}

func parseSegment(name string, f []string, r *amd64.Registers, seen map[string]bool) error {
	hex := func(i, bits int) (uint64, error) {
		if i >= len(f) {
			return 0, fmt.Errorf("%s: missing field %d: %w", name, i, ErrBadHMP)
		}
		v, err := strconv.ParseUint(f[i], 16, bits)
		if err != nil {
			return 0, fmt.Errorf("%s: field %q: %w", name, f[i], ErrBadHMP)
		}
		return v, nil
	}
	if name == "GDT" || name == "IDT" {
		base, err := hex(0, 64)
		if err != nil {
			return err
		}
		limit, err := hex(1, 32)
		if err != nil {
			return err
		}
		if name == "GDT" {
			r.GDTRBase, r.GDTRLimit = base, uint16(limit)
		} else {
			r.IDTRBase, r.IDTRLimit = base, uint16(limit)
		}
		seen[name] = true
		return nil
	}
	sel, err := hex(0, 16)
	if err != nil {
		return err
	}
	base, err := hex(1, 64)
	if err != nil {
		return err
	}
	s := uint16(sel)
	switch name {
	case "ES":
		r.ES = s
	case "CS":
		r.CS = s
	case "SS":
		r.SS = s
	case "DS":
		r.DS = s
	case "FS":
		r.FS, r.FSBase = s, base
	case "GS":
		r.GS, r.GSBase = s, base
	case "LDT":
		r.LDTR = s
	case "TR":
		r.TR = s
	}
	seen[name] = true
	return nil
}
