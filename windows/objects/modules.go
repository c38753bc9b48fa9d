package objects

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/kdstub/kdstub/windows/machine"
)

// Module is a loaded image from a kernel or user loader list.
type Module struct {
	Entry         uint64 `json:"entry"` // the LDR entry's address
	Base          uint64 `json:"base"`
	Size          uint32 `json:"size"`
	Name          string `json:"name"`
	FullName      string `json:"fullName"`
	TimeDateStamp uint32 `json:"timeDateStamp,omitempty"`
	WOW64         bool   `json:"wow64,omitempty"`
}

// ldrLayout is the LDR_DATA_TABLE_ENTRY / KLDR_DATA_TABLE_ENTRY layout of one pointer width (§7.1, §7.3).
type ldrLayout struct {
	ptr                                      int
	dllBase, sizeOfImage, fullName, baseName uint32
	timeDateStamp                            uint32
	size                                     uint32
}

var (
	kldr64 = ldrLayout{ptr: 8, dllBase: 0x30, sizeOfImage: 0x40, fullName: 0x48, baseName: 0x58, timeDateStamp: 0x9C, size: 0xA0}
	ldr64  = ldrLayout{ptr: 8, dllBase: 0x30, sizeOfImage: 0x40, fullName: 0x48, baseName: 0x58, timeDateStamp: 0x80, size: 0x88}
	ldr32  = ldrLayout{ptr: 4, dllBase: 0x18, sizeOfImage: 0x20, fullName: 0x24, baseName: 0x2C, timeDateStamp: 0x44, size: 0x48}
)

func readModule(ctx context.Context, mem machine.VirtualMemory, entry uint64, l ldrLayout) (Module, error) {
	buf := make([]byte, l.size)
	if err := mem.ReadVirtual(ctx, entry, buf); err != nil {
		return Module{}, fmt.Errorf("read loader entry %#x: %w", entry, err)
	}
	m := Module{Entry: entry, Size: binary.LittleEndian.Uint32(buf[l.sizeOfImage:]), WOW64: l.ptr == 4}
	m.TimeDateStamp = binary.LittleEndian.Uint32(buf[l.timeDateStamp:])
	if l.ptr == 8 {
		m.Base = binary.LittleEndian.Uint64(buf[l.dllBase:])
	} else {
		m.Base = uint64(binary.LittleEndian.Uint32(buf[l.dllBase:]))
	}
	var err error
	if m.FullName, err = ReadUnicodeString(ctx, mem, entry+uint64(l.fullName), l.ptr); err != nil {
		m.FullName = ""
	}
	if m.Name, err = ReadUnicodeString(ctx, mem, entry+uint64(l.baseName), l.ptr); err != nil {
		m.Name = ""
	}
	return m, nil
}

// KernelModules walks PsLoadedModuleList (KLDR_DATA_TABLE_ENTRY, x64).
func KernelModules(ctx context.Context, mem machine.VirtualMemory, head uint64) ([]Module, error) {
	var out []Module
	err := WalkList(ctx, mem, head, 8, MaxListEntries, func(link uint64) error {
		m, err := readModule(ctx, mem, link, kldr64)
		if err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("walk kernel module list at %#x: %w", head, err)
	}
	return out, nil
}

// UserModules walks a process's PEB.Ldr.InLoadOrderModuleList: the x64 list from peb, and, when peb32 is
// non-zero (a WOW64 process), the 32-bit list from the PEB32 too. mem must be the process's address space.
func UserModules(ctx context.Context, mem machine.VirtualMemory, peb, peb32 uint64) ([]Module, error) {
	var out []Module
	if peb != 0 {
		ldr, err := ReadU64(ctx, mem, peb+0x18)
		if err != nil {
			return nil, fmt.Errorf("read PEB.Ldr at %#x: %w", peb+0x18, err)
		}
		if err := WalkList(ctx, mem, ldr+0x10, 8, MaxListEntries, func(link uint64) error {
			m, err := readModule(ctx, mem, link, ldr64)
			if err != nil {
				return err
			}
			out = append(out, m)
			return nil
		}); err != nil {
			return out, fmt.Errorf("walk PEB64 loader list: %w", err)
		}
	}
	if peb32 != 0 {
		ldr, err := ReadU32(ctx, mem, peb32+0xC)
		if err != nil {
			return out, fmt.Errorf("read PEB32.Ldr at %#x: %w", peb32+0xC, err)
		}
		if err := WalkList(ctx, mem, uint64(ldr)+0xC, 4, MaxListEntries, func(link uint64) error {
			m, err := readModule(ctx, mem, link, ldr32)
			if err != nil {
				return err
			}
			out = append(out, m)
			return nil
		}); err != nil {
			return out, fmt.Errorf("walk PEB32 loader list: %w", err)
		}
	}
	return out, nil
}

// SharedData is what KUSER_SHARED_DATA says about the running system.
type SharedData struct {
	NtBuildNumber         uint32 `json:"ntBuildNumber"`
	NtProductType         uint32 `json:"ntProductType"`
	NtMajorVersion        uint32 `json:"ntMajorVersion"`
	NtMinorVersion        uint32 `json:"ntMinorVersion"`
	NtSystemRoot          string `json:"ntSystemRoot"`
	ActiveProcessorCount  uint32 `json:"activeProcessorCount"`
	NumberOfPhysicalPages uint32 `json:"numberOfPhysicalPages"`
	KdDebuggerEnabled     uint8  `json:"kdDebuggerEnabled"`
}

// KUserSharedData is the kernel VA of KUSER_SHARED_DATA on x64.
const KUserSharedData = 0xFFFF_F780_0000_0000

// ReadSharedData decodes KUSER_SHARED_DATA at va (x64 offsets, §1.6).
func ReadSharedData(ctx context.Context, mem machine.VirtualMemory, va uint64) (SharedData, error) {
	buf := make([]byte, 0x3C8)
	if err := mem.ReadVirtual(ctx, va, buf); err != nil {
		return SharedData{}, fmt.Errorf("read KUSER_SHARED_DATA at %#x: %w", va, err)
	}
	u32 := func(off int) uint32 { return binary.LittleEndian.Uint32(buf[off:]) }
	s := SharedData{
		NtBuildNumber: u32(0x260), NtProductType: u32(0x264), NtMajorVersion: u32(0x26C), NtMinorVersion: u32(0x270),
		ActiveProcessorCount: u32(0x3C0), NumberOfPhysicalPages: u32(0x2E8), KdDebuggerEnabled: buf[0x2D4],
	}
	s.NtSystemRoot = trimNUL(DecodeUTF16(buf[0x30 : 0x30+520]))
	return s, nil
}

func trimNUL(s string) string {
	for i, r := range s {
		if r == 0 {
			return s[:i]
		}
	}
	return s
}
