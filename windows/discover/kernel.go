// Package discover finds a running Windows kernel from raw memory and (optionally) CPU state alone: the KPCRs,
// a full kernel DTB, the ntoskrnl image, its exports, KdVersionBlock, the (decoded) KDBG and the anchors hanging
// off it. Every fact records the method that established it, for `kdstub scan` and for debugging a guest that
// does not look like the ones we tested.
package discover

import (
	"github.com/kdstub/kdstub/windows/kdbg"
	"github.com/kdstub/kdstub/windows/machine"
	"github.com/kdstub/kdstub/windows/objects"
	"github.com/kdstub/kdstub/windows/paging"
	"github.com/kdstub/kdstub/windows/pe"
)

// CPU is one processor's kernel objects.
type CPU struct {
	Index         int    `json:"index"`
	KPCR          uint64 `json:"kpcr"`
	KPRCB         uint64 `json:"kprcb"`
	CurrentThread uint64 `json:"currentThread"`
	IdleThread    uint64 `json:"idleThread"`
}

// Kernel is everything discovery established.
type Kernel struct {
	// Space reads kernel virtual memory: Paging when discovery ran over physical memory, or a dump's
	// VA-addressed blocks (triage dumps, where Paging is nil).
	Space  machine.VirtualMemory `json:"-"`
	Paging *paging.AddressSpace  `json:"-"` // kernel address space (System's DTB); nil for triage dumps
	DTB    uint64                `json:"dtb"`

	Base     uint64       `json:"base"`
	Size     uint32       `json:"size"`
	Image    *pe.Image    `json:"-"`
	Exports  *pe.Exports  `json:"-"`
	PDB      *pe.CodeView `json:"-"`
	PDBKey   string       `json:"pdbKey,omitempty"`
	BuildLab string       `json:"buildLab,omitempty"`

	NtBuildNumber uint32 `json:"ntBuildNumber"` // raw, e.g. 0xF0004A61
	Build         uint32 `json:"build"`         // low 16 bits

	KdVersionBlock          uint64 `json:"kdVersionBlock"`
	VersionBlock            []byte `json:"-"` // the 0x28 bytes
	KdpDebuggerDataListHead uint64 `json:"kdpDebuggerDataListHead"`

	KDBG          uint64         `json:"kdbg"`
	KDBGEncoded   bool           `json:"kdbgEncoded"`
	KDBGPlaintext kdbg.Block     `json:"-"`
	KDBGKey       kdbg.Collapsed `json:"-"`
	// From the KdCopyDataBlock pattern, when found (0 otherwise).
	KdpDataBlockEncoded uint64 `json:"kdpDataBlockEncoded,omitempty"`
	KiWaitNever         uint64 `json:"kiWaitNever,omitempty"`
	KiWaitAlways        uint64 `json:"kiWaitAlways,omitempty"`

	PsLoadedModuleList     uint64 `json:"psLoadedModuleList"`
	PsActiveProcessHead    uint64 `json:"psActiveProcessHead"`
	PsInitialSystemProcess uint64 `json:"psInitialSystemProcess"` // the System EPROCESS (the variable's value)
	KiProcessorBlock       uint64 `json:"kiProcessorBlock"`
	KeNumberProcessors     uint32 `json:"keNumberProcessors"`
	PteBase                uint64 `json:"pteBase,omitempty"`
	PsNtosImageBase        uint64 `json:"psNtosImageBase,omitempty"` // address of the variable holding Base

	CPUs    []CPU            `json:"cpus"`
	Offsets *objects.Offsets `json:"offsets"`

	// Methods says, per fact, how it was established; Warnings lists checks that failed without being fatal.
	Methods  map[string]string `json:"methods"`
	Warnings []string          `json:"warnings,omitempty"`
}

// newKernel starts a Kernel whose memory is a page-table view.
func newKernel(space *paging.AddressSpace) *Kernel {
	return &Kernel{Space: space, Paging: space, DTB: space.DTB()}
}

func (k *Kernel) method(fact, how string) {
	if k.Methods == nil {
		k.Methods = map[string]string{}
	}
	k.Methods[fact] = how
}

// Export returns the VA of a named export, or 0.
func (k *Kernel) Export(name string) uint64 {
	if k.Exports == nil {
		return 0
	}
	e, ok := k.Exports.Lookup(name)
	if !ok || e.RVA == 0 {
		return 0
	}
	return k.Base + uint64(e.RVA)
}

// Invalidate drops cached translations; the stub calls it on every resume of the guest. (The image's page cache
// only serves discovery-time scans of code and headers, which a running kernel does not rewrite.)
func (k *Kernel) Invalidate() {
	if k.Paging != nil {
		k.Paging.Invalidate()
	}
}
