package debugger

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/kdstub/kdstub/kdproto"
)

// breakpoint is one debugger breakpoint. Software breakpoints are written to the target only while it runs
// (inserted before a continue, removed at the next stop), as WinDbg does; hardware ones live in DR0-3/DR7.
type breakpoint struct {
	ID     int    `json:"id"`
	Addr   uint64 `json:"addr"`
	Kind   string `json:"kind"` // "bp", or "ba" with Access/Size
	Access string `json:"access,omitempty"`
	Size   int    `json:"size,omitempty"`
	Slot   int    `json:"-"`
	handle uint32
}

func (e *Engine) nextBPID() int {
	id := 0
	for _, b := range e.bps {
		id = max(id, b.ID+1)
	}
	return id
}

func (e *Engine) cmdBreakpoint(ctx context.Context, w io.Writer, args string) (any, error) {
	va, err := e.evaluate(ctx, args)
	if err != nil {
		return nil, err
	}
	for _, b := range e.bps {
		if b.Kind == "bp" && b.Addr == va {
			fmt.Fprintf(w, "breakpoint %d redefined\n", b.ID)
			return b, nil
		}
	}
	b := &breakpoint{ID: e.nextBPID(), Addr: va, Kind: "bp"}
	e.bps = append(e.bps, b)
	return b, nil
}

func (e *Engine) cmdHardwareBreakpoint(ctx context.Context, w io.Writer, args string) (any, error) {
	f := strings.Fields(args)
	if len(f) < 3 {
		return nil, fmt.Errorf("usage: ba r|w|e SIZE ADDR")
	}
	access := strings.ToLower(f[0])
	size, err := strconv.Atoi(f[1])
	if err != nil || (size != 1 && size != 2 && size != 4 && size != 8) {
		return nil, fmt.Errorf("ba: size %q must be 1, 2, 4 or 8", f[1])
	}
	if access == "e" && size != 1 {
		return nil, fmt.Errorf("ba e: size must be 1")
	}
	if access != "r" && access != "w" && access != "e" {
		return nil, fmt.Errorf("ba: access %q must be r, w or e", f[0])
	}
	va, err := e.evaluate(ctx, strings.Join(f[2:], " "))
	if err != nil {
		return nil, err
	}
	if va%uint64(size) != 0 {
		return nil, fmt.Errorf("Data breakpoint must be aligned")
	}
	used := map[int]bool{}
	for _, b := range e.bps {
		if b.Kind == "ba" {
			used[b.Slot] = true
		}
	}
	slot := -1
	for i := 0; i < 4; i++ {
		if !used[i] {
			slot = i
			break
		}
	}
	if slot < 0 {
		return nil, fmt.Errorf("too many data breakpoints (4 debug registers)")
	}
	b := &breakpoint{ID: e.nextBPID(), Addr: va, Kind: "ba", Access: access, Size: size, Slot: slot}
	e.bps = append(e.bps, b)
	return b, nil
}

func (e *Engine) cmdListBreakpoints(w io.Writer) (any, error) {
	for _, b := range e.bps {
		sym := e.symbolize(b.Addr)
		if b.Kind == "ba" {
			fmt.Fprintf(w, "%5d e Disable Clear  %s %s %d 0001 (0001)  0:**** %s\n", b.ID, fmtAddr(b.Addr), b.Access, b.Size, sym)
		} else {
			fmt.Fprintf(w, "%5d e Disable Clear  %s     0001 (0001)  0:**** %s\n", b.ID, fmtAddr(b.Addr), sym)
		}
	}
	return e.bps, nil
}

func (e *Engine) cmdClearBreakpoints(w io.Writer, args string) (any, error) {
	if strings.TrimSpace(args) == "*" {
		e.bps = nil
		return nil, nil
	}
	var keep []*breakpoint
	ids := map[int]bool{}
	for _, f := range strings.FieldsFunc(args, func(r rune) bool { return r == ' ' || r == ',' }) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("bc: bad breakpoint id %q", f)
		}
		ids[n] = true
	}
	for _, b := range e.bps {
		if !ids[b.ID] {
			keep = append(keep, b)
		}
	}
	e.bps = keep
	return nil, nil
}

// dr7 builds DR7 from the hardware breakpoints: local-enable bit per slot, R/W and LEN fields, bit 10 set.
func (e *Engine) dr7() uint64 {
	v := uint64(0x400)
	for _, b := range e.bps {
		if b.Kind != "ba" {
			continue
		}
		rw := map[string]uint64{"e": 0, "w": 1, "r": 3}[b.Access]
		ln := map[int]uint64{1: 0, 2: 1, 8: 2, 4: 3}[b.Size]
		v |= 1 << (2 * b.Slot)
		v |= (rw | ln<<2) << (16 + 4*b.Slot)
	}
	return v
}

// armHardware writes the current CPU's context back with DR0-3 set for the hardware breakpoints, so the target
// arms them with the DR7 of the continue. WinDbg writes the context before every continue (the shared capture,
// frames 214 and 942), so this happens even when nothing changed.
func (e *Engine) armHardware(ctx context.Context) error {
	c, err := e.context(ctx)
	if err != nil {
		return err
	}
	n := *c
	dr := [4]*uint64{&n.Dr0, &n.Dr1, &n.Dr2, &n.Dr3}
	for _, b := range e.bps {
		if b.Kind == "ba" {
			*dr[b.Slot] = b.Addr
		}
	}
	n.Dr7 = e.dr7()
	if err := e.c.SetContext(ctx, e.c.Processor(), &n); err != nil {
		return fmt.Errorf("write debug registers: %w", err)
	}
	*c = n
	return nil
}

// resume inserts breakpoints, continues (or single-steps) and waits for the next stop, then removes them. A
// breakpoint at the current PC would stop the target again at once, so the instruction there is first stepped
// with no software breakpoint inserted, as WinDbg does.
func (e *Engine) resume(ctx context.Context, trace bool, insert bool) (*kdproto.StateChange, error) {
	if insert && !trace {
		c, err := e.context(ctx)
		if err != nil {
			return nil, err
		}
		for _, b := range e.bps {
			if b.Kind == "bp" && b.Addr == c.Rip {
				sc, err := e.resume(ctx, true, false)
				if err != nil {
					return nil, fmt.Errorf("step off breakpoint %d: %w", b.ID, err)
				}
				if ex, ok := sc.U.(*kdproto.Exception64); !ok || ex.ExceptionCode != kdproto.StatusSingleStep {
					return sc, nil // something else (a data breakpoint) stopped the step
				}
				break
			}
		}
	}
	if err := e.armHardware(ctx); err != nil {
		return nil, err
	}
	var handles []uint32
	if insert {
		for _, b := range e.bps {
			if b.Kind != "bp" {
				continue
			}
			h, err := e.c.WriteBreakPoint(ctx, b.Addr)
			if err != nil {
				e.removeHandles(ctx, handles)
				return nil, fmt.Errorf("insert breakpoint %d at %#x: %w", b.ID, b.Addr, err)
			}
			b.handle = h
			handles = append(handles, h)
		}
	}
	e.invalidate()
	if err := e.c.Continue2(ctx, kdproto.ContinueOptions{TraceFlag: trace, Dr7: e.dr7()}); err != nil {
		e.removeHandles(ctx, handles)
		return nil, err
	}
	sc, err := e.c.WaitStateChange(ctx)
	if err != nil {
		return nil, err
	}
	e.removeHandles(ctx, handles)
	return sc, nil
}

func (e *Engine) removeHandles(ctx context.Context, hs []uint32) {
	for _, h := range hs {
		if err := e.c.RestoreBreakPoint(ctx, h); err != nil {
			e.log.Warn("remove breakpoint", "handle", h, "err", err)
		}
	}
}

// StopInfo describes where the target stopped.
type StopInfo struct {
	Processor  uint16 `json:"processor"`
	PC         uint64 `json:"pc"`
	Symbol     string `json:"symbol"`
	Exception  uint32 `json:"exception"`
	Breakpoint int    `json:"breakpoint"` // -1 when no debugger breakpoint explains the stop
	Thread     uint64 `json:"thread"`
}

// describeStop prints WinDbg's stop banner and the register dump.
func (e *Engine) describeStop(ctx context.Context, w io.Writer, sc *kdproto.StateChange, stepping bool) *StopInfo {
	info := &StopInfo{Processor: sc.Processor, PC: sc.ProgramCounter, Symbol: e.symbolize(sc.ProgramCounter), Breakpoint: -1, Thread: sc.Thread}
	if ex, ok := sc.U.(*kdproto.Exception64); ok {
		info.Exception = ex.ExceptionCode
	}
	for _, b := range e.bps {
		hit := b.Kind == "bp" && b.Addr == sc.ProgramCounter
		if b.Kind == "ba" && sc.ControlReport.Dr6>>b.Slot&1 != 0 {
			hit = true
		}
		if hit && !stepping {
			info.Breakpoint = b.ID
			break
		}
	}
	switch {
	case info.Breakpoint >= 0:
		fmt.Fprintf(w, "Breakpoint %d hit\n", info.Breakpoint)
	case stepping:
	case info.Exception == kdproto.StatusBreakpoint:
		fmt.Fprintln(w, "Break instruction exception - code 80000003 (first chance)")
	case info.Exception == kdproto.StatusSingleStep:
		fmt.Fprintln(w, "Single step exception - code 80000004 (first chance)")
	default:
		fmt.Fprintf(w, "Exception - code %08x (first chance)\n", info.Exception)
	}
	if c, err := e.context(ctx); err == nil {
		e.printRegisters(ctx, w, c)
	} else {
		fmt.Fprintf(w, "(registers unavailable: %v)\n", err)
	}
	return info
}

// cmdGo implements `g`: run with every breakpoint inserted until the next stop.
func (e *Engine) cmdGo(ctx context.Context, w io.Writer) (any, error) {
	sc, err := e.resume(ctx, false, true)
	if err != nil {
		return nil, err
	}
	return e.describeStop(ctx, w, sc, false), nil
}

// cmdStep implements `t` (trace into) and `p` (step over: a call is run to its return address).
func (e *Engine) cmdStep(ctx context.Context, w io.Writer, over bool) (any, error) {
	c, err := e.context(ctx)
	if err != nil {
		return nil, err
	}
	if over {
		code, err := e.readVirtual(ctx, c.Rip, 15)
		if err == nil || len(code) > 0 {
			if inst, derr := x86asm.Decode(code, 64); derr == nil && inst.Op == x86asm.CALL {
				ret := c.Rip + uint64(inst.Len)
				tmp := &breakpoint{ID: -1, Addr: ret, Kind: "bp"}
				e.bps = append(e.bps, tmp)
				sc, err := e.resume(ctx, false, true)
				e.bps = e.bps[:len(e.bps)-1]
				if err != nil {
					return nil, err
				}
				return e.describeStop(ctx, w, sc, sc.ProgramCounter == ret), nil
			}
		}
	}
	sc, err := e.resume(ctx, true, false)
	if err != nil {
		return nil, err
	}
	return e.describeStop(ctx, w, sc, true), nil
}

func (e *Engine) cmdSwitchCPU(ctx context.Context, w io.Writer, arg string) (any, error) {
	n, err := strconv.ParseUint(arg, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("bad processor %q", arg)
	}
	if int(n) >= e.c.NumberProcessors() {
		return nil, fmt.Errorf("processor %d: the target has %d", n, e.c.NumberProcessors())
	}
	sc, err := e.c.SwitchProcessor(ctx, uint16(n))
	if err != nil {
		return nil, err
	}
	e.invalidate()
	info := &StopInfo{Processor: sc.Processor, PC: sc.ProgramCounter, Symbol: e.symbolize(sc.ProgramCounter), Breakpoint: -1, Thread: sc.Thread}
	if c, err := e.context(ctx); err == nil {
		e.printRegisters(ctx, w, c)
	}
	return info, nil
}

func (e *Engine) cmdStack(ctx context.Context, w io.Writer) (any, error) {
	c, err := e.context(ctx)
	if err != nil {
		return nil, err
	}
	r := frameRegs{rip: c.Rip}
	r.gpr = [16]uint64{c.Rax, c.Rcx, c.Rdx, c.Rbx, c.Rsp, c.Rbp, c.Rsi, c.Rdi, c.R8, c.R9, c.R10, c.R11, c.R12, c.R13, c.R14, c.R15}
	frames, err := e.stackTrace(ctx, r, maxFrames)
	fmt.Fprintln(w, " # Child-SP          RetAddr               Call Site")
	for _, f := range frames {
		fmt.Fprintf(w, "%02x %s %s     %s\n", f.Number, fmtAddr(f.ChildSP), fmtAddr(f.RetAddr), f.Site)
	}
	if err != nil {
		return frames, fmt.Errorf("stack walk stopped: %w", err)
	}
	return frames, nil
}

// Detach resumes the target with no debugger breakpoints armed, as WinDbg does when it detaches.
func (e *Engine) Detach(ctx context.Context) error {
	hadHW := false
	for _, b := range e.bps {
		hadHW = hadHW || b.Kind == "ba"
	}
	e.bps = nil
	if hadHW {
		if err := e.armHardware(ctx); err != nil {
			e.log.Warn("detach: clear debug registers", "err", err)
		}
	}
	e.invalidate()
	if err := e.c.Continue2(ctx, kdproto.ContinueOptions{Dr7: 0x400}); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	return nil
}
