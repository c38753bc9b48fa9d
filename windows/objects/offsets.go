package objects

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/kdstub/kdstub/windows/kdbg"
	"github.com/kdstub/kdstub/windows/machine"
)

// Offsets are the structure offsets the walkers need (x64). Zero means "not known".
type Offsets struct {
	// EPROCESS / KPROCESS
	DirectoryTableBase     uint32 `json:"directoryTableBase"`
	KProcessThreadListHead uint32 `json:"kprocessThreadListHead"`
	UniqueProcessID        uint32 `json:"uniqueProcessId"`
	ActiveProcessLinks     uint32 `json:"activeProcessLinks"`
	ImageFileName          uint32 `json:"imageFileName"`
	Peb                    uint32 `json:"peb"`
	ParentPID              uint32 `json:"inheritedFromUniqueProcessId"`
	CreateTime             uint32 `json:"createTime"`
	UserDirectoryTableBase uint32 `json:"userDirectoryTableBase"`
	Wow64Process           uint32 `json:"wow64Process"`
	SizeEProcess           uint32 `json:"sizeEProcess"`
	// KTHREAD / ETHREAD
	KThreadThreadListEntry uint32 `json:"kthreadThreadListEntry"`
	KThreadTeb             uint32 `json:"kthreadTeb"`
	KThreadState           uint32 `json:"kthreadState"`
	KThreadApcProcess      uint32 `json:"kthreadApcProcess"`
	KThreadNextProcessor   uint32 `json:"kthreadNextProcessor"`
	EThreadCid             uint32 `json:"ethreadCid"`
	// KPCR / KPRCB
	PcrPrcb           uint32 `json:"pcrPrcb"`
	PrcbCurrentThread uint32 `json:"prcbCurrentThread"`
	PrcbNumber        uint32 `json:"prcbNumber"`

	// Methods says, per field name, how each value was obtained.
	Methods map[string]string `json:"methods"`
}

func (o *Offsets) set(field string, dst *uint32, v uint32, method string) {
	*dst = v
	if o.Methods == nil {
		o.Methods = map[string]string{}
	}
	o.Methods[field] = method
}

// Probe is what offset detection works from: System's EPROCESS bytes and VA, plus whatever else is known.
type Probe struct {
	Buf []byte // System's EPROCESS, at least up to ImageFileName+0x40 (0x800 bytes covers every build)
	VA  uint64

	KernelDTB           uint64                // optional: System's DTB must match it
	PsActiveProcessHead uint64                // optional (the KDBG): System's ActiveProcessLinks.Blink must equal it
	KDBG                kdbg.Block            // optional: decoded KDBG, source of the KTHREAD/EPROCESS offsets it carries
	Getters             map[string][]byte     // optional: first bytes of exported accessors (PsGetProcessId, …)
	Build               uint32                // optional: NtBuildNumber & 0xFFFF, for table confirmation only
	Mem                 machine.VirtualMemory // optional: follow System's links to check them
}

// ErrNotSystem says the buffer is not a plausible System EPROCESS.
var ErrNotSystem = errors.New("not a System EPROCESS")

// DecodeGetter decodes a tiny accessor `mov rax,[rcx+disp]; ret` or `lea rax,[rcx+disp]; ret` (PsGetProcessId,
// PsGetProcessImageFileName, …) and returns disp. Anything else is rejected, so a hooked or refactored function
// never yields a wrong offset.
func DecodeGetter(code []byte) (uint32, bool) {
	inst, err := x86asm.Decode(code, 64)
	if err != nil || (inst.Op != x86asm.MOV && inst.Op != x86asm.LEA) || len(inst.Args) < 2 {
		return 0, false
	}
	if r, ok := inst.Args[0].(x86asm.Reg); !ok || (r != x86asm.RAX && r != x86asm.EAX) {
		return 0, false
	}
	m, ok := inst.Args[1].(x86asm.Mem)
	if !ok || m.Base != x86asm.RCX || m.Index != 0 || m.Segment != 0 || m.Disp < 0 || m.Disp > 0x2000 {
		return 0, false
	}
	next, err := x86asm.Decode(code[inst.Len:], 64)
	if err != nil || next.Op != x86asm.RET {
		return 0, false
	}
	return uint32(m.Disp), true
}

// FILETIME bounds for a plausible process creation time: 2000-01-01 … 2100-01-01.
const (
	fileTime2000 = 125911584000000000
	fileTime2100 = 157469184000000000
)

// DetectOffsets derives EPROCESS/KTHREAD offsets from System's EPROCESS (windows-internals §6.3), preferring in
// order: decoded accessor code, the KDBG, self-calibrating heuristics on the bytes; a per-build table is used only
// for fields no other source gives (and is named as the method).
func DetectOffsets(ctx context.Context, p Probe) (*Offsets, error) {
	b := p.Buf
	if len(b) < 0x300 {
		return nil, fmt.Errorf("%w: only %#x bytes", ErrNotSystem, len(b))
	}
	if b[0] != 3 {
		return nil, fmt.Errorf("%w: DISPATCHER_HEADER.Type %d, want 3", ErrNotSystem, b[0])
	}
	o := &Offsets{}
	u64 := func(off uint32) uint64 {
		if int(off)+8 > len(b) {
			return 0
		}
		return binary.LittleEndian.Uint64(b[off:])
	}
	getter := func(name string) (uint32, bool) {
		code, ok := p.Getters[name]
		if !ok {
			return 0, false
		}
		v, ok := DecodeGetter(code)
		return v, ok && int(v)+8 <= len(b)+0x400
	}
	kd16 := func(off int) (uint32, bool) {
		v, err := p.KDBG.U16(off)
		return uint32(v), err == nil && v != 0
	}

	// DirectoryTableBase.
	if v, ok := kd16(kdbg.OffOffsetEprocessDirectoryTableBase); ok {
		o.set("directoryTableBase", &o.DirectoryTableBase, v, "KDBG.OffsetEprocessDirectoryTableBase")
	} else {
		o.set("directoryTableBase", &o.DirectoryTableBase, 0x28, "KPROCESS layout (0x28 on every x64 build)")
	}
	if p.KernelDTB != 0 && u64(o.DirectoryTableBase)&0x000F_FFFF_FFFF_F000 != p.KernelDTB&0x000F_FFFF_FFFF_F000 {
		return nil, fmt.Errorf("%w: DirectoryTableBase %#x, kernel DTB %#x", ErrNotSystem, u64(o.DirectoryTableBase), p.KernelDTB)
	}
	o.set("kprocessThreadListHead", &o.KProcessThreadListHead, 0x30, "KPROCESS layout (0x30 on every x64 build)")

	// ImageFileName.
	if v, ok := getter("PsGetProcessImageFileName"); ok && bytes.HasPrefix(b[min(int(v), len(b)):], []byte("System\x00")) {
		o.set("imageFileName", &o.ImageFileName, v, "PsGetProcessImageFileName code")
	} else {
		for off := uint32(0x100); int(off)+8 <= len(b); off += 8 {
			if u64(off) == 0x00006D6574737953 { // "System\0\0"
				o.set("imageFileName", &o.ImageFileName, off, "scan for \"System\"")
				break
			}
		}
	}
	if o.ImageFileName == 0 {
		return nil, fmt.Errorf("%w: no ImageFileName \"System\"", ErrNotSystem)
	}

	// UniqueProcessId / ActiveProcessLinks.
	linksOK := func(links uint32) bool {
		fl, bl := u64(links), u64(links+8)
		if !IsKernelPtr(fl) || !IsKernelPtr(bl) {
			return false
		}
		if p.PsActiveProcessHead != 0 && bl != p.PsActiveProcessHead {
			return false
		}
		if p.Mem != nil {
			back, err := ReadU64(ctx, p.Mem, fl+8)
			if err == nil && back != p.VA+uint64(links) {
				return false
			}
		}
		return true
	}
	if v, ok := getter("PsGetProcessId"); ok && u64(v) == 4 && linksOK(v+8) {
		o.set("uniqueProcessId", &o.UniqueProcessID, v, "PsGetProcessId code")
	} else {
		for off := uint32(0x80); off+24 <= o.ImageFileName; off += 8 {
			if u64(off) == 4 && linksOK(off+8) {
				o.set("uniqueProcessId", &o.UniqueProcessID, off, "scan: pid 4 followed by a list entry that links back")
				break
			}
		}
	}
	if o.UniqueProcessID == 0 {
		return nil, fmt.Errorf("%w: no UniqueProcessId 4 followed by valid ActiveProcessLinks", ErrNotSystem)
	}
	o.set("activeProcessLinks", &o.ActiveProcessLinks, o.UniqueProcessID+8, "UniqueProcessId + 8")

	// Peb / parent.
	if v, ok := kd16(kdbg.OffOffsetEprocessPeb); ok {
		o.set("peb", &o.Peb, v, "KDBG.OffsetEprocessPeb")
	} else if v, ok := getter("PsGetProcessPeb"); ok {
		o.set("peb", &o.Peb, v, "PsGetProcessPeb code")
	}
	if v, ok := kd16(kdbg.OffOffsetEprocessParentCID); ok {
		o.set("inheritedFromUniqueProcessId", &o.ParentPID, v, "KDBG.OffsetEprocessParentCID")
	} else if v, ok := getter("PsGetProcessInheritedFromUniqueProcessId"); ok {
		o.set("inheritedFromUniqueProcessId", &o.ParentPID, v, "PsGetProcessInheritedFromUniqueProcessId code")
	}
	if o.Peb != 0 && o.Peb >= 0x300 {
		// MemProcFS rule for Win8+: Wow64Process = Peb + 0x30.
		o.set("wow64Process", &o.Wow64Process, o.Peb+0x30, "Peb + 0x30 (Win8+ layout)")
	}
	if v, ok := kd16(kdbg.OffSizeEProcess); ok {
		o.set("sizeEProcess", &o.SizeEProcess, v, "KDBG.SizeEProcess")
	}

	// CreateTime: the first plausible FILETIME just after the links (Win8+), else just before (Win7).
	for _, d := range []int{0x10, 0x18, 0x20, 0x28, 0x30, -0x10, -0x18, -0x20, -0x28} {
		off := int(o.ActiveProcessLinks) + d
		if off < 0 {
			continue
		}
		if v := u64(uint32(off)); v > fileTime2000 && v < fileTime2100 {
			o.set("createTime", &o.CreateTime, uint32(off), "plausible FILETIME next to ActiveProcessLinks")
			break
		}
	}

	// UserDirectoryTableBase: table by build (the KVA-shadow field has no safe self-calibrating test without
	// physical access), checked to be zero or a page-aligned physical address.
	if v, ok := userDTBTable[p.Build]; ok && (u64(v) == 0 || u64(v)&0xFFF == 0 || u64(v) == 1) {
		o.set("userDirectoryTableBase", &o.UserDirectoryTableBase, v, fmt.Sprintf("per-build table (%d)", p.Build))
	}

	// KTHREAD offsets the KDBG carries.
	for _, f := range []struct {
		name string
		dst  *uint32
		off  int
	}{
		{"kthreadTeb", &o.KThreadTeb, kdbg.OffOffsetKThreadTeb},
		{"kthreadState", &o.KThreadState, kdbg.OffOffsetKThreadState},
		{"kthreadApcProcess", &o.KThreadApcProcess, kdbg.OffOffsetKThreadApcProcess},
		{"kthreadNextProcessor", &o.KThreadNextProcessor, kdbg.OffOffsetKThreadNextProcessor},
	} {
		if v, ok := kd16(f.off); ok {
			o.set(f.name, f.dst, v, "KDBG")
		}
	}
	if v, ok := getter("PsGetThreadTeb"); ok && o.KThreadTeb == 0 {
		o.set("kthreadTeb", &o.KThreadTeb, v, "PsGetThreadTeb code")
	}
	if v, ok := getter("PsGetThreadId"); ok && v >= 8 {
		o.set("ethreadCid", &o.EThreadCid, v-8, "PsGetThreadId code (Cid.UniqueThread - 8)")
	} else if v, ok := ethreadCidTable[p.Build]; ok {
		o.set("ethreadCid", &o.EThreadCid, v, fmt.Sprintf("per-build table (%d)", p.Build))
	}

	o.set("pcrPrcb", &o.PcrPrcb, 0x180, "KPCR layout")
	if v, ok := kd16(kdbg.OffOffsetPcrContainedPrcb); ok {
		o.set("pcrPrcb", &o.PcrPrcb, v, "KDBG.OffsetPcrContainedPrcb")
	}
	o.set("prcbCurrentThread", &o.PrcbCurrentThread, 0x8, "KPRCB layout")
	if v, ok := kd16(kdbg.OffOffsetPrcbCurrentThread); ok {
		o.set("prcbCurrentThread", &o.PrcbCurrentThread, v, "KDBG.OffsetPrcbCurrentThread")
	}
	o.set("prcbNumber", &o.PrcbNumber, 0x24, "KPRCB layout")
	if v, ok := kd16(kdbg.OffOffsetPrcbNumber); ok {
		o.set("prcbNumber", &o.PrcbNumber, v, "KDBG.OffsetPrcbNumber")
	}
	return o, nil
}

// userDTBTable and ethreadCidTable (windows-internals §6.4/§6.5) only fill fields nothing else yields.
var (
	userDTBTable    = map[uint32]uint32{17134: 0x278, 17763: 0x278, 18362: 0x280, 18363: 0x280, 19041: 0x388, 19042: 0x388, 19043: 0x388, 19044: 0x388, 19045: 0x388, 20348: 0x388, 22000: 0x388, 22621: 0x388, 22631: 0x388}
	ethreadCidTable = map[uint32]uint32{17763: 0x638, 18362: 0x648, 18363: 0x648, 19041: 0x478, 19042: 0x478, 19043: 0x478, 19044: 0x478, 19045: 0x478, 20348: 0x4C8, 22000: 0x4C8}
)

// DetectThreadListEntry finds KTHREAD.ThreadListEntry by following KPROCESS.ThreadListHead of a process: the
// offset at which the first entry's containing KTHREAD has Type 6 and ApcState.Process == the process.
func DetectThreadListEntry(ctx context.Context, mem machine.VirtualMemory, eprocess uint64, o *Offsets) error {
	if o.KThreadApcProcess == 0 {
		return errors.New("detect KTHREAD.ThreadListEntry: KTHREAD ApcState.Process offset unknown")
	}
	first, err := ReadU64(ctx, mem, eprocess+uint64(o.KProcessThreadListHead))
	if err != nil {
		return fmt.Errorf("detect KTHREAD.ThreadListEntry: %w", err)
	}
	if first == eprocess+uint64(o.KProcessThreadListHead) {
		return errors.New("detect KTHREAD.ThreadListEntry: process has no threads")
	}
	for off := uint32(0x100); off <= 0x800; off += 8 {
		kt := first - uint64(off)
		var typ [1]byte
		if mem.ReadVirtual(ctx, kt, typ[:]) != nil || typ[0] != 6 {
			continue
		}
		proc, err := ReadU64(ctx, mem, kt+uint64(o.KThreadApcProcess))
		if err == nil && proc == eprocess {
			o.set("kthreadThreadListEntry", &o.KThreadThreadListEntry, off, "KPROCESS.ThreadListHead → KTHREAD with Type 6 and ApcState.Process == process")
			if o.Methods["ethreadCid"] == "" || strings.HasPrefix(o.Methods["ethreadCid"], "per-build table") {
				detectCid(ctx, mem, eprocess, o)
			}
			return nil
		}
	}
	return errors.New("detect KTHREAD.ThreadListEntry: no offset in 0x100..0x800 fits")
}

// detectCid calibrates ETHREAD.Cid on a process's threads: the first 8-aligned offset (0x300..0x900) where every
// thread (up to 8) holds CLIENT_ID {UniqueProcess == the process's pid, UniqueThread == a distinct plausible
// thread id: non-zero, a multiple of 4, below 2^24}. A per-build table value, when present, must agree.
func detectCid(ctx context.Context, mem machine.VirtualMemory, eprocess uint64, o *Offsets) {
	pid, err := ReadU64(ctx, mem, eprocess+uint64(o.UniqueProcessID))
	if err != nil {
		return
	}
	var threads []uint64
	_ = WalkList(ctx, mem, eprocess+uint64(o.KProcessThreadListHead), 8, 8, func(link uint64) error {
		threads = append(threads, link-uint64(o.KThreadThreadListEntry))
		return nil
	})
	if len(threads) == 0 {
		return
	}
	for off := uint32(0x300); off < 0x900; off += 8 {
		seen := map[uint64]bool{}
		ok := true
		for _, kt := range threads {
			buf := make([]byte, 16)
			if mem.ReadVirtual(ctx, kt+uint64(off), buf) != nil {
				ok = false
				break
			}
			p, tid := binary.LittleEndian.Uint64(buf), binary.LittleEndian.Uint64(buf[8:])
			if p != pid || tid == 0 || tid%4 != 0 || tid >= 1<<24 || seen[tid] {
				ok = false
				break
			}
			seen[tid] = true
		}
		if !ok {
			continue
		}
		method := fmt.Sprintf("scan of %d thread(s): CLIENT_ID {pid, plausible tid}", len(threads))
		if o.EThreadCid != 0 && o.EThreadCid != off {
			method += fmt.Sprintf(" (disagrees with the table's %#x)", o.EThreadCid)
		} else if o.EThreadCid == off {
			method += "; confirmed by the per-build table"
		}
		o.set("ethreadCid", &o.EThreadCid, off, method)
		return
	}
}
