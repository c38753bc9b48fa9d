package debugger

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/kdstub/kdstub/kdproto"
)

// VersionInfo is `version`'s structured result.
type VersionInfo struct {
	Build              uint16 `json:"build"`
	BuildLab           string `json:"buildLab"`
	Processors         int    `json:"processors"`
	KernBase           uint64 `json:"kernBase"`
	PsLoadedModuleList uint64 `json:"psLoadedModuleList"`
	DebuggerDataList   uint64 `json:"debuggerDataList"`
	MachineType        uint16 `json:"machineType"`
}

func (e *Engine) cmdVersion(ctx context.Context, w io.Writer) (any, error) {
	v := e.c.Version
	if v == nil {
		return nil, fmt.Errorf("not attached")
	}
	info := VersionInfo{Build: v.MinorVersion, Processors: e.c.NumberProcessors(), KernBase: v.KernBase,
		PsLoadedModuleList: v.PsLoadedModuleList, DebuggerDataList: v.DebuggerDataList, MachineType: v.MachineType}
	if p, err := e.kdbgBlock().U64(0x208); err == nil && p != 0 {
		if b, err := e.c.ReadVirtual(ctx, p, 0x105); err == nil || len(b) > 0 {
			info.BuildLab = cstr(b)
		}
	}
	mp := "UP"
	if v.Flags&kdproto.VersionFlagMP != 0 {
		mp = "MP"
	}
	free := "Free"
	if v.MajorVersion&0xFF == 0x0C {
		free = "Checked"
	}
	fmt.Fprintf(w, "Windows 10 Kernel Version %d %s (%d procs) %s x64\n", v.MinorVersion, mp, info.Processors, free)
	if info.BuildLab != "" {
		fmt.Fprintf(w, "Built by: %s\n", info.BuildLab)
	}
	fmt.Fprintf(w, "Kernel base = 0x%s PsLoadedModuleList = 0x%s\n", fmtAddr(v.KernBase), fmtAddr(v.PsLoadedModuleList))
	fmt.Fprintf(w, "Debugger data list = 0x%s  KDBG = 0x%s\n", fmtAddr(v.DebuggerDataList), fmtAddr(e.c.KDBGAddress))
	fmt.Fprintf(w, "KD protocol %d.%d, MaxManipulate %#x, machine %#x\n", v.ProtocolVersion, v.KdSecondaryVersion, v.MaxManipulate, v.MachineType)
	return info, nil
}

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func (e *Engine) cmdRegisters(ctx context.Context, w io.Writer, args string) (any, error) {
	c, err := e.context(ctx)
	if err != nil {
		return nil, err
	}
	if args != "" {
		out := map[string]uint64{}
		for _, n := range strings.FieldsFunc(args, func(r rune) bool { return r == ',' || r == ' ' }) {
			n = strings.ToLower(strings.TrimPrefix(n, "@"))
			if !regIndex[n] {
				return nil, fmt.Errorf("Bad register error in 'r %s'", args)
			}
			v := regValue(c, n)
			out[n] = v
			switch {
			case n == "efl" || strings.HasPrefix(n, "e"):
				fmt.Fprintf(w, "%s=%08x\n", n, v)
			case len(n) == 2 && n[1] == 's':
				fmt.Fprintf(w, "%s=%04x\n", n, v)
			default:
				fmt.Fprintf(w, "%s=%016x\n", n, v)
			}
		}
		return out, nil
	}
	e.printRegisters(ctx, w, c)
	return contextMap(c), nil
}

func contextMap(c *kdproto.Context) map[string]uint64 {
	m := map[string]uint64{}
	for _, n := range regNames {
		m[n] = regValue(c, n)
	}
	m["efl"] = uint64(c.EFlags)
	return m
}

// printRegisters prints WinDbg's x64 register dump followed by the current instruction.
func (e *Engine) printRegisters(ctx context.Context, w io.Writer, c *kdproto.Context) {
	fmt.Fprintf(w, "rax=%016x rbx=%016x rcx=%016x\n", c.Rax, c.Rbx, c.Rcx)
	fmt.Fprintf(w, "rdx=%016x rsi=%016x rdi=%016x\n", c.Rdx, c.Rsi, c.Rdi)
	fmt.Fprintf(w, "rip=%016x rsp=%016x rbp=%016x\n", c.Rip, c.Rsp, c.Rbp)
	fmt.Fprintf(w, " r8=%016x  r9=%016x r10=%016x\n", c.R8, c.R9, c.R10)
	fmt.Fprintf(w, "r11=%016x r12=%016x r13=%016x\n", c.R11, c.R12, c.R13)
	fmt.Fprintf(w, "r14=%016x r15=%016x\n", c.R14, c.R15)
	fmt.Fprintf(w, "iopl=%-10d%s\n", (c.EFlags>>12)&3, flagString(c.EFlags))
	fmt.Fprintf(w, "cs=%04x  ss=%04x  ds=%04x  es=%04x  fs=%04x  gs=%04x             efl=%08x\n",
		c.SegCs, c.SegSs, c.SegDs, c.SegEs, c.SegFs, c.SegGs, c.EFlags)
	e.printInstructions(ctx, w, c.Rip, 1)
}

// flagString is WinDbg's flag mnemonics: of df ei ng zr ac pe cy when set, nv up di pl nz na po nc when clear.
func flagString(f uint32) string {
	pick := func(bit uint, set, clear string) string {
		if f>>bit&1 != 0 {
			return set
		}
		return clear
	}
	return strings.Join([]string{pick(11, "ov", "nv"), pick(10, "dn", "up"), pick(9, "ei", "di"), pick(7, "ng", "pl"),
		pick(6, "zr", "nz"), pick(4, "ac", "na"), pick(2, "pe", "po"), pick(0, "cy", "nc")}, " ")
}

// cmdDump implements db/dw/dd/dq/dp and their physical forms !db/!dw/!dd/!dq.
func (e *Engine) cmdDump(ctx context.Context, w io.Writer, kind byte, args string, physical bool) (any, error) {
	unit := map[byte]int{'b': 1, 'w': 2, 'd': 4, 'q': 8, 'p': 8}[kind]
	perLine := 16 / unit
	def := uint64(128 / unit)
	if unit == 8 {
		def = 16
	}
	addr, count, err := e.parseRange(ctx, args, def)
	if err != nil {
		return nil, err
	}
	n := int(count) * unit
	var data []byte
	if physical {
		data, err = e.c.ReadPhysical(ctx, addr, n)
	} else {
		data, err = e.readVirtual(ctx, addr, n)
	}
	for off := 0; off < n; off += 16 {
		at := addr + uint64(off)
		if physical {
			fmt.Fprintf(w, "#%8x", at)
		} else {
			fmt.Fprintf(w, "%s", fmtAddr(at))
		}
		line := make([]string, 0, perLine)
		for i := 0; i < perLine && off+i*unit < n; i++ {
			p := off + i*unit
			if p+unit > len(data) {
				line = append(line, strings.Repeat("?", 2*unit+boolInt(unit == 8)))
				continue
			}
			b := data[p : p+unit]
			switch unit {
			case 1:
				sep := " "
				if i == 8 {
					sep = "-"
				}
				line = append(line, sep+fmt.Sprintf("%02x", b[0]))
			case 2:
				line = append(line, fmt.Sprintf(" %04x", binary.LittleEndian.Uint16(b)))
			case 4:
				line = append(line, fmt.Sprintf(" %08x", binary.LittleEndian.Uint32(b)))
			case 8:
				line = append(line, " "+fmtAddr(binary.LittleEndian.Uint64(b)))
			}
		}
		fmt.Fprint(w, " "+strings.Join(line, ""))
		if unit == 1 {
			end := min(off+16, len(data))
			var asc []byte
			if off < end {
				for _, c := range data[off:end] {
					if c < 0x20 || c > 0x7e {
						c = '.'
					}
					asc = append(asc, c)
				}
			}
			fmt.Fprintf(w, "%s  %s", strings.Repeat("   ", 16-len(line)), asc)
		}
		fmt.Fprintln(w)
	}
	res := map[string]any{"address": addr, "bytes": fmt.Sprintf("%x", data)}
	if err != nil {
		return res, fmt.Errorf("memory read stopped after %#x of %#x bytes: %w", len(data), n, err)
	}
	return res, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Instruction is one disassembled line.
type Instruction struct {
	Addr  uint64 `json:"addr"`
	Bytes string `json:"bytes"`
	Text  string `json:"text"`
}

func (e *Engine) cmdUnassemble(ctx context.Context, w io.Writer, args string) (any, error) {
	if args == "" {
		args = "@rip"
	}
	addr, count, err := e.parseRange(ctx, args, 8)
	if err != nil {
		return nil, err
	}
	return e.printInstructions(ctx, w, addr, int(count))
}

// disassemble decodes n instructions at addr in Intel syntax, naming known addresses symbolically.
func (e *Engine) disassemble(ctx context.Context, addr uint64, n int) ([]Instruction, error) {
	code, err := e.readVirtual(ctx, addr, n*15)
	if len(code) == 0 {
		return nil, fmt.Errorf("read code at %#x: %w", addr, err)
	}
	symname := func(a uint64) (string, uint64) {
		if s := e.symbolize(a); s != "" {
			return "(" + s + ")", a
		}
		return "", 0
	}
	var out []Instruction
	off := 0
	for i := 0; i < n && off < len(code); i++ {
		at := addr + uint64(off)
		inst, derr := x86asm.Decode(code[off:], 64)
		if derr != nil || inst.Len == 0 {
			out = append(out, Instruction{Addr: at, Bytes: fmt.Sprintf("%02x", code[off]), Text: "???"})
			off++
			continue
		}
		text := x86asm.IntelSyntax(inst, at, func(a uint64) (string, uint64) {
			if s, base := symname(a); s != "" {
				return fmt.Sprintf("%s %s", fmtAddr(a), s), base
			}
			return "", 0
		})
		if op, rest, ok := strings.Cut(text, " "); ok {
			text = fmt.Sprintf("%-7s %s", op, rest)
		}
		out = append(out, Instruction{Addr: at, Bytes: fmt.Sprintf("%x", code[off:off+inst.Len]), Text: text})
		off += inst.Len
	}
	return out, nil
}

func (e *Engine) printInstructions(ctx context.Context, w io.Writer, addr uint64, n int) ([]Instruction, error) {
	ins, err := e.disassemble(ctx, addr, n)
	if err != nil {
		return nil, err
	}
	for i, in := range ins {
		if s := e.symbolize(in.Addr); s != "" && (i == 0 || !strings.Contains(s, "+")) {
			fmt.Fprintf(w, "%s:\n", s)
		}
		fmt.Fprintf(w, "%s %-15s %s\n", fmtAddr(in.Addr), in.Bytes, in.Text)
	}
	return ins, nil
}

// ModuleInfo is one `lm` row.
type ModuleInfo struct {
	Start   uint64 `json:"start"`
	End     uint64 `json:"end"`
	Name    string `json:"name"`
	File    string `json:"file"`
	Exports int    `json:"exports"`
}

func (e *Engine) cmdModules(w io.Writer) (any, error) {
	fmt.Fprintln(w, "start             end                 module name")
	var rows []ModuleInfo
	for _, m := range e.modules {
		kind := "(deferred)"
		if len(m.Exports) > 0 {
			kind = "(export symbols)"
		}
		fmt.Fprintf(w, "%s %s   %-10s %-22s %s\n", fmtAddr(m.Base), fmtAddr(m.Base+m.Size), m.Name, kind, m.FileName)
		rows = append(rows, ModuleInfo{Start: m.Base, End: m.Base + m.Size, Name: m.Name, File: m.FileName, Exports: len(m.Exports)})
	}
	return rows, nil
}

func (e *Engine) cmdRdmsr(ctx context.Context, w io.Writer, args string) (any, error) {
	msr, err := e.evaluate(ctx, args)
	if err != nil {
		return nil, err
	}
	v, err := e.c.ReadMSR(ctx, e.c.Processor(), uint32(msr))
	if err != nil {
		return nil, fmt.Errorf("no msr %x: %w", msr, err)
	}
	fmt.Fprintf(w, "msr[%x] = %s\n", msr, fmtAddr(v))
	return map[string]uint64{"msr": msr, "value": v}, nil
}

// PCRInfo is `!pcr`'s structured result.
type PCRInfo struct {
	Processor     uint16 `json:"processor"`
	KPCR          uint64 `json:"kpcr"`
	KPRCB         uint64 `json:"kprcb"`
	CurrentThread uint64 `json:"currentThread"`
	IdleThread    uint64 `json:"idleThread"`
	NextThread    uint64 `json:"nextThread"`
	GdtBase       uint64 `json:"gdtBase"`
	IdtBase       uint64 `json:"idtBase"`
}

func (e *Engine) cmdPCR(ctx context.Context, w io.Writer, args string) (any, error) {
	cpu := e.c.Processor()
	if args != "" {
		v, err := e.evaluate(ctx, args)
		if err != nil {
			return nil, err
		}
		cpu = uint16(v)
	}
	ptr := func(space uint64) (uint64, error) {
		b, err := e.c.ReadControlSpace(ctx, cpu, space, 8)
		if err != nil {
			return 0, err
		}
		if len(b) < 8 {
			return 0, fmt.Errorf("control space %d: %d bytes", space, len(b))
		}
		return binary.LittleEndian.Uint64(b), nil
	}
	info := PCRInfo{Processor: cpu}
	var err error
	if info.KPCR, err = ptr(kdproto.ControlSpaceKPCR); err != nil {
		return nil, fmt.Errorf("read KPCR address: %w", err)
	}
	if info.KPRCB, err = ptr(kdproto.ControlSpaceKPRCB); err != nil {
		return nil, fmt.Errorf("read KPRCB address: %w", err)
	}
	info.CurrentThread, _ = ptr(kdproto.ControlSpaceKThread)
	// KPRCB: +0x8 CurrentThread, +0x10 NextThread, +0x18 IdleThread (stable across x64 builds).
	if b, err := e.c.ReadVirtual(ctx, info.KPRCB+8, 0x18); err == nil {
		info.NextThread = binary.LittleEndian.Uint64(b[8:])
		info.IdleThread = binary.LittleEndian.Uint64(b[16:])
	}
	// KPCR: +0x0 GdtBase, +0x38 IdtBase.
	if b, err := e.c.ReadVirtual(ctx, info.KPCR, 0x40); err == nil {
		info.GdtBase = binary.LittleEndian.Uint64(b)
		info.IdtBase = binary.LittleEndian.Uint64(b[0x38:])
	}
	fmt.Fprintf(w, "KPCR for Processor %d at %016x:\n", cpu, info.KPCR)
	fmt.Fprintf(w, "                  Prcb: %016x\n", info.KPRCB)
	fmt.Fprintf(w, "         CurrentThread: %016x\n", info.CurrentThread)
	fmt.Fprintf(w, "            NextThread: %016x\n", info.NextThread)
	fmt.Fprintf(w, "            IdleThread: %016x\n", info.IdleThread)
	fmt.Fprintf(w, "               GdtBase: %016x\n", info.GdtBase)
	fmt.Fprintf(w, "               IdtBase: %016x\n", info.IdtBase)
	return info, nil
}
