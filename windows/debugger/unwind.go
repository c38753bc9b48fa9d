package debugger

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/kdstub/kdstub/windows/pe"
)

// x64 exception-directory unwinding (the PE/COFF spec's "x64 exception handling"): each non-leaf function has a
// RUNTIME_FUNCTION in .pdata pointing at an UNWIND_INFO whose codes undo the prologue. Everything here is read
// from guest memory through KD, so every count and chain is bounded.

const (
	dirException       = 3
	runtimeFunctionLen = 12
	maxRuntimeFuncs    = 1 << 20 // .pdata larger than 12 MiB is not plausible
	maxChain           = 32      // chained UNWIND_INFO links followed
	maxFrames          = 64      // frames `k` prints
	unwFlagChainInfo   = 4
)

// Unwind operation codes.
const (
	uwopPushNonvol    = 0
	uwopAllocLarge    = 1
	uwopAllocSmall    = 2
	uwopSetFPReg      = 3
	uwopSaveNonvol    = 4
	uwopSaveNonvolFar = 5
	uwopEpilog        = 6
	uwopSpareCode     = 7
	uwopSaveXMM128    = 8
	uwopSaveXMM128Far = 9
	uwopPushMachframe = 10
)

// errNoUnwindInfo marks a function without .pdata (a leaf: the return address is at RSP).
var errNoUnwindInfo = errors.New("no unwind info")

// pdataCache holds one module's RUNTIME_FUNCTION table, read on first use.
type pdataCache struct {
	im     *pe.Image
	loaded bool
	funcs  [][3]uint32 // begin, end, unwind RVA
}

func (p *pdataCache) load(ctx context.Context) error {
	if p.loaded {
		return nil
	}
	p.loaded = true
	d := p.im.Directories[dirException]
	if d.RVA == 0 || d.Size < runtimeFunctionLen {
		return nil
	}
	n := min(int(d.Size/runtimeFunctionLen), maxRuntimeFuncs)
	buf := make([]byte, n*runtimeFunctionLen)
	if err := p.im.ReadRVA(ctx, d.RVA, buf); err != nil {
		return fmt.Errorf("read .pdata: %w", err)
	}
	for i := range n {
		b := buf[i*runtimeFunctionLen:]
		p.funcs = append(p.funcs, [3]uint32{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])})
	}
	sort.Slice(p.funcs, func(i, j int) bool { return p.funcs[i][0] < p.funcs[j][0] })
	return nil
}

// lookup returns the RUNTIME_FUNCTION covering rva.
func (p *pdataCache) lookup(rva uint32) ([3]uint32, bool) {
	i := sort.Search(len(p.funcs), func(i int) bool { return p.funcs[i][0] > rva }) - 1
	if i < 0 || rva >= p.funcs[i][1] {
		return [3]uint32{}, false
	}
	return p.funcs[i], true
}

// frameRegs is the register subset unwinding needs: the 16 GPRs (x86 encoding order) and RIP.
type frameRegs struct {
	gpr [16]uint64 // rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15
	rip uint64
}

const regRSP = 4

// Frame is one line of a stack trace.
type Frame struct {
	Number  int    `json:"number"`
	ChildSP uint64 `json:"childSP"`
	RetAddr uint64 `json:"retAddr"`
	IP      uint64 `json:"ip"`
	Site    string `json:"site"`
}

// stackTrace unwinds from regs until the return address leaves every known module, is zero, or maxFrames.
func (e *Engine) stackTrace(ctx context.Context, regs frameRegs, limit int) ([]Frame, error) {
	var out []Frame
	for i := 0; i < limit; i++ {
		f := Frame{Number: i, ChildSP: regs.gpr[regRSP], IP: regs.rip, Site: e.symbolize(regs.rip)}
		if f.Site == "" {
			f.Site = fmtAddr(regs.rip)
		}
		next, err := e.unwindOnce(ctx, regs)
		if err != nil {
			out = append(out, f)
			return out, err
		}
		f.RetAddr = next.rip
		out = append(out, f)
		if next.rip == 0 || next.gpr[regRSP] <= regs.gpr[regRSP] || e.moduleAt(next.rip) == nil {
			break
		}
		regs = next
	}
	return out, nil
}

// unwindOnce computes the caller's registers from the callee's.
func (e *Engine) unwindOnce(ctx context.Context, r frameRegs) (frameRegs, error) {
	m := e.moduleAt(r.rip)
	var rf [3]uint32
	found := false
	if m != nil && m.pdata != nil {
		if err := m.pdata.load(ctx); err != nil {
			return r, err
		}
		rf, found = m.pdata.lookup(uint32(r.rip - m.Base))
	}
	if found {
		if err := e.applyUnwind(ctx, m, &r, uint32(r.rip-m.Base)-rf[0], rf[2]); err != nil {
			if errors.Is(err, errMachframe) {
				return r, nil
			}
			return r, err
		}
	}
	ret, err := e.readU64(ctx, r.gpr[regRSP])
	if err != nil {
		return r, fmt.Errorf("read return address at %#x: %w", r.gpr[regRSP], err)
	}
	r.rip = ret
	r.gpr[regRSP] += 8
	return r, nil
}

// applyUnwind undoes the prologue effects recorded in the UNWIND_INFO at unwindRVA (following chains), for a
// PC that is offset bytes into the function. Afterwards RSP points at the return address.
func (e *Engine) applyUnwind(ctx context.Context, m *Module, r *frameRegs, offset, unwindRVA uint32) error {
	for depth := 0; depth < maxChain; depth++ {
		var hdr [4]byte
		if err := m.pdata.im.ReadRVA(ctx, unwindRVA, hdr[:]); err != nil {
			return fmt.Errorf("read UNWIND_INFO at rva %#x: %w", unwindRVA, err)
		}
		version, flags := hdr[0]&7, hdr[0]>>3
		if version != 1 && version != 2 {
			return fmt.Errorf("UNWIND_INFO at rva %#x: version %d", unwindRVA, version)
		}
		prolog, count := uint32(hdr[1]), int(hdr[2])
		frameReg, frameOff := hdr[3]&0xF, uint64(hdr[3]>>4)*16
		codes := make([]byte, 2*count)
		if count > 0 {
			if err := m.pdata.im.ReadRVA(ctx, unwindRVA+4, codes); err != nil {
				return fmt.Errorf("read unwind codes at rva %#x: %w", unwindRVA+4, err)
			}
		}
		slot := func(i int) uint16 { return binary.LittleEndian.Uint16(codes[2*i:]) }
		for i := 0; i < count; {
			codeOff, op, info := uint32(codes[2*i]), codes[2*i+1]&0xF, uint64(codes[2*i+1]>>4)
			active := depth > 0 || offset >= prolog || codeOff <= offset
			n := 1
			switch op {
			case uwopPushNonvol:
				if active {
					v, err := e.readU64(ctx, r.gpr[regRSP])
					if err != nil {
						return err
					}
					r.gpr[info] = v
					r.gpr[regRSP] += 8
				}
			case uwopAllocLarge:
				var size uint64
				if info == 0 {
					if i+1 >= count {
						return errors.New("truncated UWOP_ALLOC_LARGE")
					}
					size, n = uint64(slot(i+1))*8, 2
				} else {
					if i+2 >= count {
						return errors.New("truncated UWOP_ALLOC_LARGE")
					}
					size, n = uint64(slot(i+1))|uint64(slot(i+2))<<16, 3
				}
				if active {
					r.gpr[regRSP] += size
				}
			case uwopAllocSmall:
				if active {
					r.gpr[regRSP] += info*8 + 8
				}
			case uwopSetFPReg:
				if active {
					r.gpr[regRSP] = r.gpr[frameReg] - frameOff
				}
			case uwopSaveNonvol, uwopSaveXMM128:
				n = 2
				if op == uwopSaveNonvol && active && i+1 < count {
					at := uint64(slot(i+1)) * 8
					if v, err := e.readU64(ctx, r.gpr[regRSP]+at); err == nil {
						r.gpr[info] = v
					}
				}
			case uwopSaveNonvolFar, uwopSaveXMM128Far:
				n = 3
				if op == uwopSaveNonvolFar && active && i+2 < count {
					at := uint64(slot(i+1)) | uint64(slot(i+2))<<16
					if v, err := e.readU64(ctx, r.gpr[regRSP]+at); err == nil {
						r.gpr[info] = v
					}
				}
			case uwopEpilog, uwopSpareCode:
				n = 2
			case uwopPushMachframe:
				if active {
					sp := r.gpr[regRSP]
					if info == 1 {
						sp += 8
					}
					rip, err := e.readU64(ctx, sp)
					if err != nil {
						return err
					}
					rsp, err := e.readU64(ctx, sp+24)
					if err != nil {
						return err
					}
					// The machine frame holds the interrupted RIP and RSP: the caller is that context itself.
					r.rip, r.gpr[regRSP] = rip, rsp
					return errMachframe
				}
			default:
				return fmt.Errorf("unknown unwind op %d", op)
			}
			i += n
		}
		if flags&unwFlagChainInfo == 0 {
			return nil
		}
		// The chained RUNTIME_FUNCTION follows the (even-padded) code array.
		at := unwindRVA + 4 + uint32((count+1)&^1)*2
		var chained [runtimeFunctionLen]byte
		if err := m.pdata.im.ReadRVA(ctx, at, chained[:]); err != nil {
			return fmt.Errorf("read chained RUNTIME_FUNCTION at rva %#x: %w", at, err)
		}
		unwindRVA = binary.LittleEndian.Uint32(chained[8:])
	}
	return fmt.Errorf("unwind chain longer than %d", maxChain)
}

// errMachframe tells unwindOnce that RIP/RSP were restored from a machine frame (no return address to pop).
var errMachframe = errors.New("machine frame")

func (e *Engine) readU64(ctx context.Context, va uint64) (uint64, error) {
	b, err := e.readVirtual(ctx, va, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}
