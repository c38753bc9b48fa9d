package discover

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"

	"github.com/kdstub/kdstub/windows/dump"
	"github.com/kdstub/kdstub/windows/kdbg"
	"github.com/kdstub/kdstub/windows/objects"
	"github.com/kdstub/kdstub/windows/pe"
)

// FromTriage builds the Kernel a triage dump can describe. It holds no physical memory, only VA-addressed
// blocks, so Paging stays nil: the facts come from the dump header, the decoded KDBG copy, the ntoskrnl header
// page and the crashing CPU's KPRCB/thread/process copies.
func FromTriage(ctx context.Context, lg *slog.Logger, d *dump.File) (*Kernel, error) {
	tri, err := d.Triage()
	if err != nil {
		return nil, err
	}
	h := d.Header()
	if !tri.KDBG.Present() {
		return nil, fmt.Errorf("triage dump without a KDBG copy")
	}
	b := kdbg.Block(tri.KDBG.Data)
	if size := int(b.Size()); size > 0 && size <= len(b) {
		b = b[:size]
	}
	k := &Kernel{Space: d, DTB: h.DTB, Base: b.KernBase(), KDBG: h.KdDebuggerDataBlock, KDBGPlaintext: b,
		Build: h.MinorVersion, NtBuildNumber: 0xF0000000 | h.MinorVersion}
	k.method("DTB", "dump header DirectoryTableBase")
	k.method("NtBuildNumber", "dump header MinorVersion")
	if err := kdbg.Validate(b, k.Base); err != nil {
		k.Warnings = append(k.Warnings, err.Error())
	}
	k.method("KDBG", "dump header KdDebuggerDataBlock; decoded copy from the triage data")
	k.method("Base", "KDBG.KernBase")
	if im, err := pe.Open(ctx, d, k.Base); err == nil {
		k.Image, k.Size = im, im.SizeOfImage
		if cv, err := im.CodeView(ctx); err == nil {
			k.PDB, k.PDBKey = cv, cv.SymbolKey()
		}
	} else {
		k.Warnings = append(k.Warnings, err.Error())
	}
	k.PsLoadedModuleList, k.PsActiveProcessHead, k.KiProcessorBlock = b.PsLoadedModuleList(), b.PsActiveProcessHead(), b.KiProcessorBlock()
	for _, f := range []string{"PsLoadedModuleList", "PsActiveProcessHead", "KiProcessorBlock"} {
		k.method(f, "KDBG")
	}
	if len(b) >= 0x368 {
		k.PteBase = b.PteBase()
	}
	if tri.Process.Present() {
		o, err := objects.DetectOffsets(ctx, objects.Probe{
			Buf: tri.Process.Data, VA: tri.Process.VA, KernelDTB: h.DTB, PsActiveProcessHead: k.PsActiveProcessHead,
			KDBG: b, Build: k.Build, Mem: d,
		})
		if err == nil {
			k.Offsets, k.PsInitialSystemProcess = o, tri.Process.VA
			k.method("PsInitialSystemProcess", "triage EPROCESS copy (verified to be System)")
		} else {
			k.Warnings = append(k.Warnings, fmt.Sprintf("triage EPROCESS copy: %v", err))
		}
	}
	if tri.Prcb.Present() && len(tri.Prcb.Data) >= 0x28 {
		c := CPU{Index: int(binary.LittleEndian.Uint32(tri.Prcb.Data[0x24:])), KPRCB: tri.Prcb.VA, KPCR: tri.Prcb.VA - 0x180,
			CurrentThread: binary.LittleEndian.Uint64(tri.Prcb.Data[0x8:]), IdleThread: binary.LittleEndian.Uint64(tri.Prcb.Data[0x18:])}
		k.CPUs = append(k.CPUs, c)
		k.method("CPUs", "triage KPRCB copy (the crashing CPU only)")
	}
	for _, w := range k.Warnings {
		lg.Warn("triage discovery", "warning", w)
	}
	return k, nil
}
