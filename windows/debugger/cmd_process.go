package debugger

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/kdstub/kdstub/windows/kdbg"
	"github.com/kdstub/kdstub/windows/objects"
	"github.com/kdstub/kdstub/windows/paging"
)

// getterExports are the accessors whose first instruction reveals an EPROCESS offset (objects.DetectOffsets).
var getterExports = []string{"PsGetProcessId", "PsGetProcessImageFileName", "PsGetProcessPeb",
	"PsGetProcessInheritedFromUniqueProcessId", "PsGetThreadTeb", "PsGetThreadId"}

// processOffsets calibrates the EPROCESS layout on System's EPROCESS, once.
func (e *Engine) processOffsets(ctx context.Context) (*objects.Offsets, uint64, error) {
	mem := kernelMem{e}
	psInit, ok := e.lookupSymbol("nt!PsInitialSystemProcess")
	if !ok {
		return nil, 0, fmt.Errorf("nt!PsInitialSystemProcess is not exported")
	}
	system, err := objects.ReadU64(ctx, mem, psInit)
	if err != nil {
		return nil, 0, fmt.Errorf("read nt!PsInitialSystemProcess: %w", err)
	}
	if e.offsets != nil {
		return e.offsets, system, nil
	}
	blk := e.kdbgBlock()
	size := 0x1000
	if s, err := blk.U16(kdbg.OffSizeEProcess); err == nil && s != 0 {
		size = max(int(s), 0x800)
	}
	buf := make([]byte, size)
	if err := mem.ReadVirtual(ctx, system, buf); err != nil {
		return nil, 0, fmt.Errorf("read System EPROCESS at %#x: %w", system, err)
	}
	getters := map[string][]byte{}
	for _, n := range getterExports {
		if va, ok := e.lookupSymbol("nt!" + n); ok {
			code := make([]byte, 16)
			if mem.ReadVirtual(ctx, va, code) == nil {
				getters[n] = code
			}
		}
	}
	var head uint64
	if len(blk) > kdbg.OffPsActiveProcessHead+8 {
		head = blk.PsActiveProcessHead()
	}
	o, err := objects.DetectOffsets(ctx, objects.Probe{Buf: buf, VA: system, PsActiveProcessHead: head, KDBG: blk,
		Getters: getters, Build: uint32(e.c.Version.MinorVersion), Mem: mem})
	if err != nil {
		return nil, 0, fmt.Errorf("EPROCESS offsets: %w", err)
	}
	e.offsets = o
	return o, system, nil
}

// processes lists the active processes from PsActiveProcessHead.
func (e *Engine) processes(ctx context.Context) ([]objects.Process, error) {
	o, system, err := e.processOffsets(ctx)
	if err != nil {
		return nil, err
	}
	head := e.kdbgBlock().PsActiveProcessHead()
	if head == 0 {
		head, err = objects.ReadU64(ctx, kernelMem{e}, system+uint64(o.ActiveProcessLinks)+8)
		if err != nil {
			return nil, fmt.Errorf("find PsActiveProcessHead: %w", err)
		}
	}
	return objects.Processes(ctx, kernelMem{e}, head, o)
}

func (e *Engine) cmdProcess(ctx context.Context, w io.Writer, args string) (any, error) {
	f := strings.Fields(args)
	if len(f) > 0 && f[0] != "0" {
		return nil, fmt.Errorf("only `!process 0 0` is supported")
	}
	procs, err := e.processes(ctx)
	fmt.Fprintln(w, "**** NT ACTIVE PROCESS DUMP ****")
	for _, p := range procs {
		fmt.Fprintf(w, "PROCESS %016x\n", p.EPROCESS)
		fmt.Fprintf(w, "    SessionId: none  Cid: %04x    Peb: %08x  ParentCid: %04x\n", p.PID, p.PEB, p.PPID)
		fmt.Fprintf(w, "    DirBase: %08x  ObjectTable: 00000000  HandleCount:   0.\n", p.DTB)
		fmt.Fprintf(w, "    Image: %s\n\n", p.Name)
	}
	return procs, err
}

// cmdSetProcess implements `.process [ADDR]`: user-mode addresses are then translated with that process's
// DirectoryTableBase (read through physical memory), as WinDbg's implicit process does.
func (e *Engine) cmdSetProcess(ctx context.Context, w io.Writer, args string) (any, error) {
	if args == "" || args == "0" {
		e.process, e.procAS = 0, nil
		fmt.Fprintln(w, "Implicit process is now the current process")
		return map[string]uint64{"process": 0}, nil
	}
	args = strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(args, "/p"), "/r"))
	va, err := e.evaluate(ctx, args)
	if err != nil {
		return nil, err
	}
	o, _, err := e.processOffsets(ctx)
	if err != nil {
		return nil, err
	}
	p, err := objects.ReadProcess(ctx, kernelMem{e}, va, o)
	if err != nil {
		return nil, err
	}
	if p.DTB == 0 {
		return nil, fmt.Errorf("process %#x has no DirectoryTableBase", va)
	}
	e.process, e.procAS = va, paging.New(physMem{e.c}, p.DTB, paging.ModeX64)
	fmt.Fprintf(w, "Implicit process is now %s\n", fmtAddr(va))
	return map[string]any{"process": va, "dtb": p.DTB, "name": p.Name}, nil
}
