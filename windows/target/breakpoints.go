package target

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/kdstub/kdstub/kdproto"
)

// WriteBreakpoint implements kdproto.Target: the handle table mirrors the kernel's 32-slot table, but each
// entry is an emulator breakpoint, so no byte of guest memory changes.
func (t *Target) WriteBreakpoint(ctx context.Context, va uint64) (uint32, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := 0
	for i := 1; i <= maxBreakpoints; i++ {
		if t.bps[i] == 0 {
			h = i
			break
		}
	}
	if h == 0 {
		return 0, kdproto.NewStatusError(kdproto.StatusUnsuccessful, errors.New("breakpoint table full (32 handles)"))
	}
	if va == 0 {
		return 0, kdproto.NewStatusError(kdproto.StatusUnsuccessful, errors.New("breakpoint at address 0"))
	}
	if t.bpRefs[va] == 0 {
		if err := t.m.AddBreakpoint(ctx, Breakpoint{Kind: Software, Addr: va, Len: 1}); err != nil {
			return 0, fmt.Errorf("breakpoint at %#x: %w", va, err)
		}
	}
	t.bpRefs[va]++
	t.bps[h] = va
	return uint32(h), nil
}

// RestoreBreakpoint implements kdproto.Target. An unknown handle fails, as WinDbg expects when it probes
// handles 1..32 at attach.
func (t *Target) RestoreBreakpoint(ctx context.Context, handle uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if handle == 0 || handle > maxBreakpoints || t.bps[handle] == 0 {
		return kdproto.NewStatusError(kdproto.StatusUnsuccessful, fmt.Errorf("no breakpoint with handle %d", handle))
	}
	va := t.bps[handle]
	t.bps[handle] = 0
	t.bpRefs[va]--
	if t.bpRefs[va] > 0 {
		return nil
	}
	delete(t.bpRefs, va)
	if err := t.m.RemoveBreakpoint(ctx, Breakpoint{Kind: Software, Addr: va, Len: 1}); err != nil {
		return fmt.Errorf("remove breakpoint %d at %#x: %w", handle, va, err)
	}
	return nil
}

// Breakpoints returns the armed software breakpoints by handle (for status output and tests).
func (t *Target) Breakpoints() map[uint32]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[uint32]uint64{}
	for h, va := range t.bps {
		if va != 0 {
			out[uint32(h)] = va
		}
	}
	return out
}

// dr7Slot decodes debug-register slot i of dr7: whether it is enabled, and the breakpoint it asks for.
// I/O breakpoints (R/W = 2) have no emulator equivalent and are reported as not ok.
func dr7Slot(dr7, addr uint64, i int) (Breakpoint, bool) {
	if dr7>>(2*i)&3 == 0 {
		return Breakpoint{}, false
	}
	rw := dr7 >> (16 + 4*i) & 3
	length := [4]uint64{1, 2, 8, 4}[dr7>>(18+4*i)&3]
	switch rw {
	case 0:
		return Breakpoint{Kind: Hardware, Addr: addr, Len: 1}, true
	case 1:
		return Breakpoint{Kind: WatchWrite, Addr: addr, Len: length}, true
	case 3:
		return Breakpoint{Kind: WatchAccess, Addr: addr, Len: length}, true
	}
	return Breakpoint{}, false
}

// wantedHardware is the union over CPUs of the breakpoints their shadow DR7 enables (emulator breakpoints
// apply to every CPU).
func (t *Target) wantedHardware() map[Breakpoint]bool {
	want := map[Breakpoint]bool{}
	for _, d := range t.dr {
		for i := range d.dr {
			if bp, ok := dr7Slot(d.dr7, d.dr[i], i); ok {
				want[bp] = true
			}
		}
	}
	return want
}

// syncHardware makes the emulator's hardware breakpoints and watchpoints match the DR shadow. Callers hold t.mu.
func (t *Target) syncHardware(ctx context.Context) error {
	want := t.wantedHardware()
	var errs []error
	for _, bp := range sortedBPs(t.hwArmed) {
		if !want[bp] {
			if err := t.m.RemoveBreakpoint(ctx, bp); err != nil {
				errs = append(errs, fmt.Errorf("remove %s at %#x len %d: %w", bp.Kind, bp.Addr, bp.Len, err))
			}
			delete(t.hwArmed, bp)
		}
	}
	for _, bp := range sortedBPs(want) {
		if !t.hwArmed[bp] {
			if err := t.m.AddBreakpoint(ctx, bp); err != nil {
				errs = append(errs, fmt.Errorf("add %s at %#x len %d: %w", bp.Kind, bp.Addr, bp.Len, err))
				continue
			}
			t.hwArmed[bp] = true
		}
	}
	return errors.Join(errs...)
}

// sortedBPs orders a set so that machine calls happen in a reproducible order.
func sortedBPs(m map[Breakpoint]bool) []Breakpoint {
	out := make([]Breakpoint, 0, len(m))
	for bp := range m {
		out = append(out, bp)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Addr != out[j].Addr {
			return out[i].Addr < out[j].Addr
		}
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Len < out[j].Len
	})
	return out
}

// matchDR returns the debug-register slot of cpu whose breakpoint covers a stop at addr (the PC for an
// execution breakpoint, the watched address for a watchpoint), or -1.
func (t *Target) matchDR(cpu int, addr uint64, exec bool) int {
	if cpu < 0 || cpu >= len(t.dr) {
		return -1
	}
	d := t.dr[cpu]
	for i := range d.dr {
		bp, ok := dr7Slot(d.dr7, d.dr[i], i)
		if !ok || (bp.Kind == Hardware) != exec {
			continue
		}
		if addr >= bp.Addr && addr < bp.Addr+bp.Len {
			return i
		}
	}
	return -1
}

// Watch arms an emulator watchpoint of any length the machine accepts (64 KiB and more under TCG). It is a
// kdstub extension for tools that talk to the Target directly: DR7, the only way KD expresses data
// breakpoints, cannot describe more than 8 bytes. A hit is reported like a debug-register hit whose slot is
// unknown (STATUS_SINGLE_STEP, no DR6 B0..B3 bit).
func (t *Target) Watch(ctx context.Context, kind BreakpointKind, addr, length uint64) error {
	if kind != WatchWrite && kind != WatchRead && kind != WatchAccess {
		return fmt.Errorf("watch: kind %s is not a watchpoint", kind)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.m.AddBreakpoint(ctx, Breakpoint{Kind: kind, Addr: addr, Len: length}); err != nil {
		return fmt.Errorf("watch %#x bytes at %#x: %w", length, addr, err)
	}
	return nil
}

// Unwatch removes a watchpoint armed by Watch.
func (t *Target) Unwatch(ctx context.Context, kind BreakpointKind, addr, length uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.m.RemoveBreakpoint(ctx, Breakpoint{Kind: kind, Addr: addr, Len: length}); err != nil {
		return fmt.Errorf("unwatch %#x bytes at %#x: %w", length, addr, err)
	}
	return nil
}
