package discover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/windows/machine"
	"github.com/kdstub/kdstub/windows/objects"
	"github.com/kdstub/kdstub/windows/paging"
)

// maxCPUs bounds KiProcessorBlock walks.
const maxCPUs = 1024

// FromCPUs discovers the kernel from live or saved CPU state (windows-internals §0).
func FromCPUs(ctx context.Context, lg *slog.Logger, phys machine.PhysicalMemory, cpus machine.CPUState) (*Kernel, error) {
	var views []cpuView
	var errs []error
	for i := 0; i < cpus.CPUCount() && i < maxCPUs; i++ {
		regs, err := cpus.Registers(ctx, i)
		if err != nil {
			errs = append(errs, fmt.Errorf("cpu %d: %w", i, err))
			continue
		}
		v, err := findKPCR(ctx, phys, regs)
		if err != nil {
			errs = append(errs, fmt.Errorf("cpu %d: %w", i, err))
			continue
		}
		views = append(views, v)
	}
	if len(views) == 0 {
		return nil, fmt.Errorf("no CPU has a usable KPCR: %w", errors.Join(errs...))
	}
	for _, v := range views {
		for _, c := range dtbCandidates(ctx, v) {
			k := newKernel(paging.New(phys, c.dtb, v.space.Mode()))
			idt, idtHow := v.regs.IDTRBase, "IDTR"
			if !v.regs.Have.Has(amd64.HaveDescriptors) || idt == 0 {
				var err error
				if idt, err = objects.ReadU64(ctx, k.Space, v.kpcr+kpcrIdtBase); err != nil {
					errs = append(errs, err)
					continue
				}
				idtHow = "KPCR.IdtBase"
			}
			handler, err := idtHandler(ctx, k.Space, idt, 0)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			im, ex, how, err := findBaseFromHandler(ctx, k.Space, handler)
			if err != nil {
				errs = append(errs, fmt.Errorf("DTB %#x (%s): %w", c.dtb, c.how, err))
				continue
			}
			k.Image, k.Exports, k.Base, k.Size = im, ex, im.Base, im.SizeOfImage
			k.method("KPCR", "Self check on "+v.source)
			k.method("DTB", c.how)
			k.method("Base", fmt.Sprintf("IDT[0] handler %#x (%s) scanned back to MZ; validated by %s", handler, idtHow, how))
			lg.Debug("kernel found", "base", fmt.Sprintf("%#x", k.Base), "dtb", fmt.Sprintf("%#x", k.DTB))
			if err := k.finish(ctx, lg); err != nil {
				return k, err
			}
			return k, nil
		}
	}
	return nil, fmt.Errorf("kernel image not found from %d CPU(s): %w", len(views), errors.Join(errs...))
}

// finish runs the steps shared by both entry points once the kernel image and DTB are known.
func (k *Kernel) finish(ctx context.Context, lg *slog.Logger) error {
	if cv, err := k.Image.CodeView(ctx); err == nil {
		k.PDB, k.PDBKey = cv, cv.SymbolKey()
	}
	// Exports: the easy anchors.
	if k.Exports != nil {
		if va := k.Export("PsLoadedModuleList"); va != 0 {
			k.PsLoadedModuleList = va
			k.method("PsLoadedModuleList", "export")
		}
		if va := k.Export("PsInitialSystemProcess"); va != 0 {
			if v, err := objects.ReadU64(ctx, k.Space, va); err == nil && objects.IsKernelPtr(v) {
				k.PsInitialSystemProcess = v
				k.method("PsInitialSystemProcess", "export (pointer variable)")
			}
		}
		if va := k.Export("NtBuildNumber"); va != 0 {
			if v, err := objects.ReadU32(ctx, k.Space, va); err == nil {
				k.NtBuildNumber, k.Build = v, v&0xFFFF
				k.method("NtBuildNumber", "export")
			}
		}
		if va := k.Export("KeNumberProcessors"); va != 0 {
			if v, err := objects.ReadU32(ctx, k.Space, va); err == nil && v > 0 && v <= maxCPUs {
				k.KeNumberProcessors = v
				k.method("KeNumberProcessors", "export")
			}
		}
		if va := k.Export("NtBuildLab"); va != 0 {
			buf := make([]byte, 128)
			if k.Space.ReadVirtual(ctx, va, buf) == nil {
				k.BuildLab = cstr(buf)
			}
		}
	}
	k.preferSystemDTB(ctx)
	if va := findPsNtosImageBase(ctx, k.Image); va != 0 {
		k.PsNtosImageBase = va
		k.method("PsNtosImageBase", "first qword equal to the base in ALMOSTRO/.data (confirms the base)")
	} else {
		k.Warnings = append(k.Warnings, "no qword in ALMOSTRO/.data holds the kernel base (PsNtosImageBase)")
	}
	// KdVersionBlock.
	if va, blk := findVersionBlock(ctx, k); va != 0 {
		k.KdVersionBlock, k.VersionBlock = va, blk
		k.KdpDebuggerDataListHead = le64(blk[0x20:])
		k.method("KdVersionBlock", "signature scan of .data (version, machine, KernBase, PsLoadedModuleList)")
		if k.Build == 0 {
			k.Build = uint32(blk[2]) | uint32(blk[3])<<8
		}
	} else {
		k.Warnings = append(k.Warnings, "KdVersionBlock not found in .data")
	}
	if err := findKDBG(ctx, k); err != nil {
		k.Warnings = append(k.Warnings, err.Error())
	} else {
		b := k.KDBGPlaintext
		if v := b.PsLoadedModuleList(); k.PsLoadedModuleList == 0 {
			k.PsLoadedModuleList = v
			k.method("PsLoadedModuleList", "KDBG")
		} else if v != k.PsLoadedModuleList {
			k.Warnings = append(k.Warnings, fmt.Sprintf("KDBG PsLoadedModuleList %#x != export %#x", v, k.PsLoadedModuleList))
		}
		k.PsActiveProcessHead = b.PsActiveProcessHead()
		k.method("PsActiveProcessHead", "KDBG")
		k.KiProcessorBlock = b.KiProcessorBlock()
		k.method("KiProcessorBlock", "KDBG")
		if len(b) >= 0x368 {
			k.PteBase = b.PteBase()
		}
	}
	if err := k.detectOffsets(ctx); err != nil {
		k.Warnings = append(k.Warnings, err.Error())
	}
	k.readCPUs(ctx)
	for _, w := range k.Warnings {
		lg.Warn("discovery", "warning", w)
	}
	if k.PsActiveProcessHead == 0 || k.PsLoadedModuleList == 0 {
		return fmt.Errorf("kernel at %#x found but its anchors are incomplete: %v", k.Base, k.Warnings)
	}
	return nil
}

// preferSystemDTB switches the kernel view to System's own DirectoryTableBase when it maps the kernel too: a
// CPU may have been stopped inside any process, and the self-map scan may have hit any process's tables.
func (k *Kernel) preferSystemDTB(ctx context.Context) {
	if k.PsInitialSystemProcess == 0 || k.Paging == nil {
		return
	}
	v, err := objects.ReadU64(ctx, k.Space, k.PsInitialSystemProcess+0x28) // KPROCESS.DirectoryTableBase
	if err != nil || v&paging.DTBMask == k.DTB || v&paging.DTBMask == 0 {
		return
	}
	sys := k.Paging.WithDTB(v)
	var mz [2]byte
	if sys.ReadVirtual(ctx, k.Base, mz[:]) != nil || mz != [2]byte{'M', 'Z'} {
		k.Warnings = append(k.Warnings, fmt.Sprintf("System DirectoryTableBase %#x does not map the kernel; keeping %#x", v, k.DTB))
		return
	}
	k.method("DTB", fmt.Sprintf("System EPROCESS.DirectoryTableBase (kernel first found through %#x: %s)", k.DTB, k.Methods["DTB"]))
	k.DTB, k.Space, k.Paging = sys.DTB(), sys, sys
}

// getterNames are the exported accessors whose first instruction reveals an offset.
var getterNames = []string{"PsGetProcessId", "PsGetProcessImageFileName", "PsGetProcessPeb",
	"PsGetProcessInheritedFromUniqueProcessId", "PsGetThreadTeb", "PsGetThreadId"}

// detectOffsets calibrates the structure offsets on System's EPROCESS.
func (k *Kernel) detectOffsets(ctx context.Context) error {
	if k.PsInitialSystemProcess == 0 {
		return errors.New("offsets: System EPROCESS unknown (PsInitialSystemProcess not exported or unreadable)")
	}
	size := 0x1000
	if s := k.KDBGPlaintext.Must16(0x2A8); s != 0 {
		size = max(int(s), 0x800)
	}
	buf := make([]byte, size)
	if err := k.Space.ReadVirtual(ctx, k.PsInitialSystemProcess, buf); err != nil {
		return fmt.Errorf("offsets: read System EPROCESS: %w", err)
	}
	getters := map[string][]byte{}
	for _, n := range getterNames {
		if va := k.Export(n); va != 0 {
			code := make([]byte, 16)
			if k.Space.ReadVirtual(ctx, va, code) == nil {
				getters[n] = code
			}
		}
	}
	o, err := objects.DetectOffsets(ctx, objects.Probe{
		Buf: buf, VA: k.PsInitialSystemProcess, KernelDTB: k.DTB, PsActiveProcessHead: k.PsActiveProcessHead,
		KDBG: k.KDBGPlaintext, Getters: getters, Build: k.Build, Mem: k.Space,
	})
	if err != nil {
		return fmt.Errorf("offsets: %w", err)
	}
	k.Offsets = o
	if k.PsActiveProcessHead == 0 {
		if blink, err := objects.ReadU64(ctx, k.Space, k.PsInitialSystemProcess+uint64(o.ActiveProcessLinks)+8); err == nil {
			k.PsActiveProcessHead = blink
			k.method("PsActiveProcessHead", "System.ActiveProcessLinks.Blink")
		}
	} else if blink, err := objects.ReadU64(ctx, k.Space, k.PsInitialSystemProcess+uint64(o.ActiveProcessLinks)+8); err == nil && blink != k.PsActiveProcessHead {
		k.Warnings = append(k.Warnings, fmt.Sprintf("System.ActiveProcessLinks.Blink %#x != KDBG PsActiveProcessHead %#x", blink, k.PsActiveProcessHead))
	}
	if err := objects.DetectThreadListEntry(ctx, k.Space, k.PsInitialSystemProcess, o); err != nil {
		k.Warnings = append(k.Warnings, err.Error())
	}
	return nil
}

// readCPUs lists KPCR/KPRCB/current thread per CPU from KiProcessorBlock.
func (k *Kernel) readCPUs(ctx context.Context) {
	if k.KiProcessorBlock == 0 {
		return
	}
	prcbOff, curOff := uint64(0x180), uint64(0x8)
	if k.Offsets != nil {
		prcbOff, curOff = uint64(k.Offsets.PcrPrcb), uint64(k.Offsets.PrcbCurrentThread)
	}
	n := int(k.KeNumberProcessors)
	if n == 0 {
		n = maxCPUs
	}
	for i := 0; i < n; i++ {
		prcb, err := objects.ReadU64(ctx, k.Space, k.KiProcessorBlock+uint64(8*i))
		if err != nil || prcb == 0 {
			break
		}
		c := CPU{Index: i, KPRCB: prcb, KPCR: prcb - prcbOff}
		c.CurrentThread, _ = objects.ReadU64(ctx, k.Space, prcb+curOff)
		c.IdleThread, _ = objects.ReadU64(ctx, k.Space, prcb+0x18)
		if !isKPCR(ctx, k.Space, c.KPCR) {
			k.Warnings = append(k.Warnings, fmt.Sprintf("cpu %d: KPRCB %#x - %#x fails the KPCR Self check", i, prcb, prcbOff))
		}
		k.CPUs = append(k.CPUs, c)
	}
	k.method("CPUs", "KiProcessorBlock[i] = KPRCB; KPCR = KPRCB - OffsetPcrContainedPrcb")
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
