package kdbg

import (
	"bytes"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// CopyDataBlock is what the KdCopyDataBlock code pattern reveals (windows-internals §5.4).
type CopyDataBlock struct {
	Function            uint64 // VA of the `cmp byte [rip+X], 0`
	KdpDataBlockEncoded uint64
	KdDebuggerDataBlock uint64
	KiWaitNever         uint64
	KiWaitAlways        uint64
	QwordCount          uint32 // the Size/8 immediate found in the loop
}

// maxFunctionBytes bounds the disassembly from each candidate.
const maxFunctionBytes = 300

// FindCopyDataBlock scans code (mapped at codeVA) for KdCopyDataBlock: a `cmp byte [rip+X], 0` (80 3D) followed,
// before the first ret, by a bswap, the qword count Size/8 as an immediate, `lea r64,[rip+KDBG]`, then
// `mov r64,[rip+KiWaitNever]` and `mov/xor r64,[rip+KiWaitAlways]`. When wantKDBG is non-zero the lea target
// must equal it (the stronger filter when the KDBG address is already known). It returns every match.
func FindCopyDataBlock(code []byte, codeVA uint64, wantKDBG uint64) []CopyDataBlock {
	var out []CopyDataBlock
	for off := 0; off+7 <= len(code); {
		i := bytes.Index(code[off:], []byte{0x80, 0x3D})
		if i < 0 {
			break
		}
		pos := off + i
		off = pos + 1
		if m, ok := matchCopyDataBlock(code[pos:min(len(code), pos+maxFunctionBytes)], codeVA+uint64(pos)); ok {
			if wantKDBG == 0 || m.KdDebuggerDataBlock == wantKDBG {
				out = append(out, m)
			}
		}
	}
	return out
}

func ripTarget(inst x86asm.Inst, next uint64, arg int) (uint64, bool) {
	if arg >= len(inst.Args) {
		return 0, false
	}
	m, ok := inst.Args[arg].(x86asm.Mem)
	if !ok || m.Base != x86asm.RIP || m.Index != 0 {
		return 0, false
	}
	return next + uint64(m.Disp), true
}

func isReg64(a x86asm.Arg) bool {
	r, ok := a.(x86asm.Reg)
	return ok && r >= x86asm.RAX && r <= x86asm.R15
}

func matchCopyDataBlock(code []byte, va uint64) (CopyDataBlock, bool) {
	var m CopyDataBlock
	m.Function = va
	var sawBswap bool
	var counts []uint32
	stage := 0 // 0: want cmp, 1: want lea, 2: want mov N, 3: want mov/xor W, 4: done
	for pc := 0; pc < len(code); {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return m, false
		}
		next := va + uint64(pc+inst.Len)
		pc += inst.Len
		switch {
		case inst.Op == x86asm.RET:
			if stage == 4 && sawBswap {
				for _, c := range counts {
					if sizeOK(c * 8) {
						m.QwordCount = c
						return m, true
					}
				}
			}
			return m, false
		case stage == 0:
			imm, ok := inst.Args[1].(x86asm.Imm)
			t, okT := ripTarget(inst, next, 0)
			if inst.Op != x86asm.CMP || !ok || imm != 0 || !okT || inst.MemBytes != 1 {
				return m, false
			}
			m.KdpDataBlockEncoded = t
			stage = 1
			continue
		case inst.Op == x86asm.BSWAP:
			sawBswap = true
		}
		for _, a := range inst.Args {
			if imm, ok := a.(x86asm.Imm); ok && imm > 0 && imm < MaxSize/8 {
				counts = append(counts, uint32(imm))
			}
		}
		switch stage {
		case 1:
			if t, ok := ripTarget(inst, next, 1); ok && inst.Op == x86asm.LEA && isReg64(inst.Args[0]) {
				m.KdDebuggerDataBlock = t
				stage = 2
			}
		case 2:
			if t, ok := ripTarget(inst, next, 1); ok && inst.Op == x86asm.MOV && isReg64(inst.Args[0]) {
				m.KiWaitNever = t
				stage = 3
			}
		case 3:
			if t, ok := ripTarget(inst, next, 1); ok && (inst.Op == x86asm.MOV || inst.Op == x86asm.XOR) && isReg64(inst.Args[0]) {
				m.KiWaitAlways = t
				stage = 4
			}
		}
	}
	return m, false
}

// String summarises a match.
func (c CopyDataBlock) String() string {
	return fmt.Sprintf("KdCopyDataBlock@%#x: encoded flag %#x, KDBG %#x, KiWaitNever %#x, KiWaitAlways %#x, %d qwords",
		c.Function, c.KdpDataBlockEncoded, c.KdDebuggerDataBlock, c.KiWaitNever, c.KiWaitAlways, c.QwordCount)
}
