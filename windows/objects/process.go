package objects

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/kdstub/kdstub/windows/machine"
)

// Process is one EPROCESS.
type Process struct {
	EPROCESS   uint64    `json:"eprocess"`
	PID        uint64    `json:"pid"`
	PPID       uint64    `json:"ppid"`
	Name       string    `json:"name"`
	DTB        uint64    `json:"dtb"`
	UserDTB    uint64    `json:"userDtb,omitempty"`
	PEB        uint64    `json:"peb"`
	Wow64PEB   uint64    `json:"wow64Peb,omitempty"`
	CreateTime time.Time `json:"createTime,omitzero"`
}

// ReadProcess decodes one EPROCESS.
func ReadProcess(ctx context.Context, mem machine.VirtualMemory, eprocess uint64, o *Offsets) (Process, error) {
	end := max(o.ImageFileName+16, o.ActiveProcessLinks+16, o.Peb+8, o.ParentPID+8, o.CreateTime+8,
		o.UserDirectoryTableBase+8, o.Wow64Process+8, o.DirectoryTableBase+8)
	buf := make([]byte, end)
	if err := mem.ReadVirtual(ctx, eprocess, buf); err != nil {
		return Process{}, fmt.Errorf("read EPROCESS %#x: %w", eprocess, err)
	}
	u64 := func(off uint32) uint64 { return binary.LittleEndian.Uint64(buf[off:]) }
	p := Process{
		EPROCESS: eprocess,
		PID:      u64(o.UniqueProcessID),
		Name:     cString(buf[o.ImageFileName : o.ImageFileName+15]),
		DTB:      u64(o.DirectoryTableBase) & 0x000F_FFFF_FFFF_F000,
	}
	if o.ParentPID != 0 {
		p.PPID = u64(o.ParentPID)
	}
	if o.Peb != 0 {
		p.PEB = u64(o.Peb)
	}
	if o.UserDirectoryTableBase != 0 {
		p.UserDTB = u64(o.UserDirectoryTableBase) & 0x000F_FFFF_FFFF_F000
	}
	if o.CreateTime != 0 {
		if ft := u64(o.CreateTime); ft > fileTime2000 && ft < fileTime2100 {
			p.CreateTime = FileTime(ft)
		}
	}
	if o.Wow64Process != 0 {
		if w := u64(o.Wow64Process); IsKernelPtr(w) {
			// EWOW64PROCESS.Peb @0 (Win10+); Win7 stored the PEB32 pointer directly.
			if peb32, err := ReadU64(ctx, mem, w); err == nil && IsUserPtr(peb32) {
				p.Wow64PEB = peb32
			}
		}
	}
	return p, nil
}

// FileTime converts a Windows FILETIME (100 ns since 1601) to time.Time.
func FileTime(ft uint64) time.Time {
	const epochDiff = 116444736000000000 // 1601 → 1970 in 100 ns units
	if ft < epochDiff {
		return time.Time{}
	}
	d := ft - epochDiff
	return time.Unix(int64(d/10_000_000), int64(d%10_000_000)*100).UTC()
}

// Processes walks ActiveProcessLinks from the list head (PsActiveProcessHead).
func Processes(ctx context.Context, mem machine.VirtualMemory, head uint64, o *Offsets) ([]Process, error) {
	var out []Process
	err := WalkList(ctx, mem, head, 8, MaxListEntries, func(link uint64) error {
		p, err := ReadProcess(ctx, mem, link-uint64(o.ActiveProcessLinks), o)
		if err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("walk process list at %#x: %w", head, err)
	}
	return out, nil
}

// Thread is one KTHREAD/ETHREAD.
type Thread struct {
	KTHREAD uint64 `json:"kthread"`
	PID     uint64 `json:"pid"`
	TID     uint64 `json:"tid"`
	TEB     uint64 `json:"teb"`
	State   uint8  `json:"state"`
	CPU     uint32 `json:"cpu"`
}

// ThreadStates names KTHREAD_STATE values.
var ThreadStates = [...]string{"Initialized", "Ready", "Running", "Standby", "Terminated", "Waiting", "Transition", "DeferredReady", "GateWaitObsolete", "WaitingForProcessInSwap"}

// Threads walks KPROCESS.ThreadListHead → KTHREAD.ThreadListEntry.
func Threads(ctx context.Context, mem machine.VirtualMemory, eprocess uint64, o *Offsets) ([]Thread, error) {
	if o.KThreadThreadListEntry == 0 {
		return nil, fmt.Errorf("threads of %#x: KTHREAD.ThreadListEntry offset unknown", eprocess)
	}
	var out []Thread
	err := WalkList(ctx, mem, eprocess+uint64(o.KProcessThreadListHead), 8, MaxListEntries, func(link uint64) error {
		kt := link - uint64(o.KThreadThreadListEntry)
		t := Thread{KTHREAD: kt}
		if o.KThreadTeb != 0 {
			t.TEB, _ = ReadU64(ctx, mem, kt+uint64(o.KThreadTeb))
		}
		if o.KThreadState != 0 {
			var b [1]byte
			if mem.ReadVirtual(ctx, kt+uint64(o.KThreadState), b[:]) == nil {
				t.State = b[0]
			}
		}
		if o.KThreadNextProcessor != 0 {
			cpu, _ := ReadU32(ctx, mem, kt+uint64(o.KThreadNextProcessor))
			t.CPU = cpu & 0x7FFFFFFF // NextProcessor is a 31-bit field
		}
		if o.EThreadCid != 0 {
			t.PID, _ = ReadU64(ctx, mem, kt+uint64(o.EThreadCid))
			t.TID, _ = ReadU64(ctx, mem, kt+uint64(o.EThreadCid)+8)
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("walk threads of %#x: %w", eprocess, err)
	}
	return out, nil
}
