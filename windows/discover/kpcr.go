package discover

import (
	"context"
	"fmt"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/windows/machine"
	"github.com/kdstub/kdstub/windows/objects"
	"github.com/kdstub/kdstub/windows/paging"
)

// KPCR field offsets (x64, identical on 7601 … 22000).
const (
	kpcrSelf        = 0x18
	kpcrCurrentPrcb = 0x20
	kpcrIdtBase     = 0x38
	kpcrPrcb        = 0x180
)

// kernelDTBOffsets are the gs-relative offsets of KPRCB.KernelDirectoryTableBase (KVA shadow) per build family
// (windows-internals §6.6); each candidate is verified, never trusted.
var kernelDTBOffsets = []uint64{0x9000, 0xA000, 0x7000, 0x6000}

// isKPCR checks the Self and CurrentPrcb links.
func isKPCR(ctx context.Context, mem machine.VirtualMemory, va uint64) bool {
	if !objects.IsKernelPtr(va) {
		return false
	}
	self, err1 := objects.ReadU64(ctx, mem, va+kpcrSelf)
	prcb, err2 := objects.ReadU64(ctx, mem, va+kpcrCurrentPrcb)
	return err1 == nil && err2 == nil && self == va && prcb == va+kpcrPrcb
}

// cpuView is one CPU's KPCR and the address space discovery reads it through.
type cpuView struct {
	regs   amd64.Registers
	kpcr   uint64
	source string // "GSBase" or "KernelGSBase"
	space  *paging.AddressSpace
}

// findKPCR picks the KPCR of one CPU: whichever of GS base and KernelGSBase passes the Self check.
func findKPCR(ctx context.Context, phys machine.PhysicalMemory, regs amd64.Registers) (cpuView, error) {
	space, err := paging.FromRegisters(phys, &regs)
	if err != nil {
		return cpuView{}, err
	}
	if space.Mode() != paging.ModeX64 && space.Mode() != paging.ModeX64LA57 {
		return cpuView{}, fmt.Errorf("paging mode %s: only x64 guests are discovered", space.Mode())
	}
	for _, c := range []struct {
		va  uint64
		src string
	}{{regs.GSBase, "GSBase"}, {regs.KernelGSBase, "KernelGSBase"}} {
		if isKPCR(ctx, space, c.va) {
			return cpuView{regs: regs, kpcr: c.va, source: c.src, space: space}, nil
		}
	}
	return cpuView{}, fmt.Errorf("neither GS base %#x nor KernelGSBase %#x is a KPCR (Self check) under CR3 %#x",
		regs.GSBase, regs.KernelGSBase, regs.CR3)
}

// dtbCandidate is a DTB that may map the whole kernel, with how it was obtained.
type dtbCandidate struct {
	dtb uint64
	how string
}

// dtbCandidates lists DTBs to try for the full kernel view, best first: the CPU's CR3 when it runs in ring 0,
// then KPRCB.KernelDirectoryTableBase (KVA shadow: a user CR3 maps only the shadow subset of the kernel), then the
// CR3 anyway (KVA shadow off). Each must at least map the KPCR; the caller proves the rest by finding the image.
func dtbCandidates(ctx context.Context, v cpuView) []dtbCandidate {
	var out []dtbCandidate
	seen := map[uint64]bool{}
	add := func(dtb uint64, how string) {
		as := v.space.WithDTB(dtb)
		if seen[as.DTB()] || !isKPCR(ctx, as, v.kpcr) {
			return
		}
		seen[as.DTB()] = true
		out = append(out, dtbCandidate{as.DTB(), how})
	}
	if v.regs.CS&3 == 0 {
		add(v.space.DTB(), "CR3 of a CPU in ring 0")
	}
	for _, off := range kernelDTBOffsets {
		val, err := objects.ReadU64(ctx, v.space, v.kpcr+off)
		if err != nil || val == 0 || val&paging.DTBMask == 0 {
			continue
		}
		add(val, fmt.Sprintf("KPRCB.KernelDirectoryTableBase (gs:%#x)", off))
	}
	add(v.space.DTB(), "CR3 (KVA shadow off)")
	return out
}

// idtHandler reads the handler address of an x64 IDT gate.
func idtHandler(ctx context.Context, mem machine.VirtualMemory, idt uint64, vector int) (uint64, error) {
	gate := make([]byte, 16)
	if err := mem.ReadVirtual(ctx, idt+uint64(16*vector), gate); err != nil {
		return 0, fmt.Errorf("read IDT gate %#x at %#x: %w", vector, idt+uint64(16*vector), err)
	}
	h := uint64(gate[0]) | uint64(gate[1])<<8 | uint64(gate[6])<<16 | uint64(gate[7])<<24 |
		uint64(gate[8])<<32 | uint64(gate[9])<<40 | uint64(gate[10])<<48 | uint64(gate[11])<<56
	return h, nil
}
