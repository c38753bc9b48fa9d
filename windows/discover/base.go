package discover

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kdstub/kdstub/windows/machine"
	"github.com/kdstub/kdstub/windows/pe"
)

// maxBackwardScan bounds the walk from an IDT handler down to the image header (hvmi and MemProcFS use similar
// limits; ntoskrnl's KVASCODE sits about 10 MiB above its header on 19041).
const maxBackwardScan = 64 << 20

// kernelPDBNames are the PDB names of every ntoskrnl flavour.
var kernelPDBNames = []string{"ntkrnlmp.pdb", "ntoskrnl.pdb", "ntkrpamp.pdb", "ntkrnlpa.pdb"}

// validateKernel applies the checks of windows-internals §2.4 to a candidate base.
func validateKernel(ctx context.Context, mem machine.VirtualMemory, base, handler uint64) (*pe.Image, *pe.Exports, string, error) {
	im, err := pe.Open(ctx, mem, base)
	if err != nil {
		return nil, nil, "", err
	}
	if im.Machine != pe.MachineAMD64 || !im.Is64 {
		return nil, nil, "", fmt.Errorf("image at %#x: machine %#x, not an x64 PE32+", base, im.Machine)
	}
	if im.ImageBase != base {
		return nil, nil, "", fmt.Errorf("image at %#x: ImageBase %#x (an embedded image, not the loaded one)", base, im.ImageBase)
	}
	if im.Subsystem != 1 {
		return nil, nil, "", fmt.Errorf("image at %#x: subsystem %d, not native", base, im.Subsystem)
	}
	if handler != 0 && handler-base >= uint64(im.SizeOfImage) {
		return nil, nil, "", fmt.Errorf("image at %#x (size %#x) does not contain handler %#x", base, im.SizeOfImage, handler)
	}
	ex, exErr := im.Exports(ctx)
	if exErr == nil && strings.EqualFold(ex.DLLName, "ntoskrnl.exe") {
		return im, ex, "export directory name ntoskrnl.exe", nil
	}
	if exErr == nil {
		return nil, nil, "", fmt.Errorf("image at %#x exports as %q, not ntoskrnl.exe", base, ex.DLLName)
	}
	if cv, err := im.CodeView(ctx); err == nil {
		for _, n := range kernelPDBNames {
			if strings.EqualFold(cv.PDBName(), n) {
				return im, nil, "RSDS PDB name " + n + " (exports not resident)", nil
			}
		}
	}
	return nil, nil, "", fmt.Errorf("image at %#x: exports unreadable (%v) and no kernel PDB name", base, exErr)
}

// findBaseFromHandler walks down from a handler address to the ntoskrnl header.
func findBaseFromHandler(ctx context.Context, mem machine.VirtualMemory, handler uint64) (*pe.Image, *pe.Exports, string, error) {
	var mz [2]byte
	var lastErr error = errors.New("no MZ page found")
	for off := uint64(0); off < maxBackwardScan; off += 0x1000 {
		if err := ctx.Err(); err != nil {
			return nil, nil, "", err
		}
		p := handler&^0xFFF - off
		if mem.ReadVirtual(ctx, p, mz[:]) != nil || mz != [2]byte{'M', 'Z'} {
			continue
		}
		im, ex, how, err := validateKernel(ctx, mem, p, handler)
		if err == nil {
			return im, ex, how, nil
		}
		lastErr = err
	}
	return nil, nil, "", fmt.Errorf("no ntoskrnl image within %d MiB below %#x: %w", maxBackwardScan>>20, handler, lastErr)
}

// findPsNtosImageBase looks for the qword holding the image's own base in its data sections (the hvmi check of
// windows-internals §2.4: that variable is nt!PsNtosImageBase, in ALMOSTRO or .data). It returns its VA or 0.
func findPsNtosImageBase(ctx context.Context, im *pe.Image) uint64 {
	for _, name := range []string{"ALMOSTRO", ".data"} {
		s, ok := im.Section(name)
		if !ok {
			continue
		}
		var hit uint64
		forEachDataPage(ctx, im, s, func(rva uint32, page []byte) bool {
			for off := 0; off+8 <= len(page); off += 8 {
				if le64(page[off:]) == im.Base {
					hit = im.Base + uint64(rva) + uint64(off)
					return false
				}
			}
			return true
		})
		if hit != 0 {
			return hit
		}
	}
	return 0
}
