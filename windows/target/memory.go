package target

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/windows/paging"
)

const pageSize = 4096

// maxSearch bounds one SearchMemory request (guest-controlled length; WinDbg splits big searches itself).
const maxSearch = 256 << 20

// space returns the address space to translate va in for cpu: the CPU's own CR3 first, and for kernel
// addresses the kernel CR3 as a fallback (a CPU in user mode under KVA shadow maps only part of the kernel).
// Callers hold t.mu.
func (t *Target) translate(ctx context.Context, cpu int, va uint64) (uint64, error) {
	r, err := t.registers(ctx, cpu)
	if err != nil {
		return 0, err
	}
	var firstErr error
	if mode, merr := paging.ModeFromRegisters(&r); merr == nil {
		pa, err := t.spaceFor(r.CR3, mode).Translate(ctx, va)
		if err == nil {
			return pa, nil
		}
		firstErr = err
	} else {
		firstErr = merr
	}
	if va>>63 == 1 && t.k != nil && t.k.KernelCR3 != 0 && t.k.KernelCR3&paging.DTBMask != r.CR3&paging.DTBMask {
		if pa, err := t.spaceFor(t.k.KernelCR3, paging.ModeX64).Translate(ctx, va); err == nil {
			return pa, nil
		}
	}
	return 0, firstErr
}

func (t *Target) spaceFor(cr3 uint64, mode paging.Mode) *paging.AddressSpace {
	key := cr3&paging.DTBMask | uint64(mode)
	as, ok := t.spaces[key]
	if !ok {
		as = paging.New(t.m, cr3, mode)
		t.spaces[key] = as
	}
	return as
}

// readVirtual reads page by page until the first unreadable page and applies the KDBG overlays.
// Callers hold t.mu.
func (t *Target) readVirtual(ctx context.Context, cpu int, va uint64, buf []byte) (int, error) {
	if va+uint64(len(buf)) < va && va+uint64(len(buf)) != 0 {
		buf = buf[:-va] // stop at the top of the address space
	}
	n := 0
	var err error
	for n < len(buf) {
		cur := va + uint64(n)
		chunk := min(int(pageSize-cur%pageSize), len(buf)-n)
		var pa uint64
		if pa, err = t.translate(ctx, cpu, cur); err != nil {
			err = fmt.Errorf("read %#x bytes at VA %#x (cpu %d): %w", len(buf), va, cpu, err)
			break
		}
		if err = t.m.ReadPhysical(ctx, pa, buf[n:n+chunk]); err != nil {
			err = fmt.Errorf("read %#x bytes at VA %#x (cpu %d, PA %#x): %w", len(buf), va, cpu, pa, err)
			break
		}
		n += chunk
	}
	t.overlayVirtual(va, buf[:n])
	return n, err
}

// overlayVirtual makes a virtual read show what a debug-booted kernel holds: the decoded KDBG, a zero
// KdpDataBlockEncoded and a debugger data list whose head points at the KDBG (windows-internals.md §5.5).
func (t *Target) overlayVirtual(va uint64, b []byte) {
	k := t.k
	if k == nil || len(b) == 0 {
		return
	}
	if len(k.KDBGPlain) > 0 {
		overlay(b, va, k.KDBG, k.KDBGPlain)
	}
	if k.KdpDataBlockEncoded != 0 {
		overlay(b, va, k.KdpDataBlockEncoded, []byte{0})
	}
}

// overlayPhysical applies the same overlays to a physical read.
func (t *Target) overlayPhysical(pa uint64, b []byte) {
	k := t.k
	if k == nil {
		return
	}
	for _, s := range t.kdbgSpans {
		overlay(b, pa, s.pa, k.KDBGPlain[s.plainOff:s.plainOff+s.n])
	}
	if t.flagPAKnown {
		overlay(b, pa, t.flagPA, []byte{0})
	}
}

// overlay copies src (which lives at address at) over the part of b (at address base) they share.
func overlay(b []byte, base, at uint64, src []byte) {
	end := base + uint64(len(b))
	srcEnd := at + uint64(len(src))
	if end < base || srcEnd < at { // wrapped: ignore rather than guess
		return
	}
	lo, hi := max(base, at), min(end, srcEnd)
	if lo >= hi {
		return
	}
	copy(b[lo-base:hi-base], src[lo-at:hi-at])
}

// ReadVirtual implements kdproto.Target.
func (t *Target) ReadVirtual(ctx context.Context, cpu int, va uint64, buf []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkCPU(cpu); err != nil {
		return 0, err
	}
	return t.readVirtual(ctx, cpu, va, buf)
}

// WriteVirtual implements kdproto.Target: page by page through the CPU's translation.
func (t *Target) WriteVirtual(ctx context.Context, cpu int, va uint64, data []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkCPU(cpu); err != nil {
		return 0, err
	}
	n := 0
	for n < len(data) {
		cur := va + uint64(n)
		chunk := min(int(pageSize-cur%pageSize), len(data)-n)
		pa, err := t.translate(ctx, cpu, cur)
		if err != nil {
			return n, fmt.Errorf("write %#x bytes at VA %#x (cpu %d): %w", len(data), va, cpu, err)
		}
		if err := t.m.WritePhysical(ctx, pa, data[n:n+chunk]); err != nil {
			return n, fmt.Errorf("write %#x bytes at VA %#x (cpu %d, PA %#x): %w", len(data), va, cpu, pa, err)
		}
		n += chunk
	}
	return n, nil
}

// ReadPhysical implements kdproto.Target.
func (t *Target) ReadPhysical(ctx context.Context, pa uint64, buf []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.m.ReadPhysical(ctx, pa, buf); err != nil {
		return 0, fmt.Errorf("read %#x bytes at PA %#x: %w", len(buf), pa, err)
	}
	t.overlayPhysical(pa, buf)
	return len(buf), nil
}

// WritePhysical implements kdproto.Target.
func (t *Target) WritePhysical(ctx context.Context, pa uint64, data []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.m.WritePhysical(ctx, pa, data); err != nil {
		return 0, fmt.Errorf("write %#x bytes at PA %#x: %w", len(data), pa, err)
	}
	return len(data), nil
}

// QueryMemory implements kdproto.Target as ReactOS does: the space follows the address half, and a mapped
// address is readable, writable and executable.
func (t *Target) QueryMemory(ctx context.Context, cpu int, va uint64) (uint32, uint32, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkCPU(cpu); err != nil {
		return 0, 0, err
	}
	if _, err := t.translate(ctx, cpu, va); err != nil {
		return 0, 0, fmt.Errorf("query VA %#x: %w", va, err)
	}
	space := uint32(0)
	if va>>63 == 1 {
		space = 2
	}
	return space, 1 | 2 | 4, nil
}

// SearchMemory implements kdproto.Target: a bounded scan that skips unreadable pages.
func (t *Target) SearchMemory(ctx context.Context, cpu int, start, length uint64, pattern []byte) (uint64, error) {
	if len(pattern) == 0 {
		return 0, kdproto.NewStatusError(kdproto.StatusInvalidParameter, errors.New("empty search pattern"))
	}
	length = min(length, maxSearch)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkCPU(cpu); err != nil {
		return 0, err
	}
	const chunk = 64 << 10
	end := start + length
	if end < start {
		end = ^uint64(0)
	}
	buf := make([]byte, chunk)
	var carry []byte // the last len(pattern)-1 bytes of the previous readable piece
	carryAt := start
	for pos := start; pos < end; {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n := int(min(uint64(chunk), end-pos))
		got, _ := t.readVirtual(ctx, cpu, pos, buf[:n])
		window := append(carry, buf[:got]...)
		if i := bytes.Index(window, pattern); i >= 0 {
			return carryAt + uint64(i), nil
		}
		if got < n { // an unreadable page: restart after it
			next := (pos+uint64(got))&^(pageSize-1) + pageSize
			if next <= pos {
				break
			}
			pos, carry, carryAt = next, nil, next
			continue
		}
		keep := min(len(window), len(pattern)-1)
		carry = append([]byte(nil), window[len(window)-keep:]...)
		pos += uint64(got)
		carryAt = pos - uint64(keep)
	}
	return 0, kdproto.ErrNotFound
}

// FillMemory implements kdproto.Target.
func (t *Target) FillMemory(ctx context.Context, cpu int, addr uint64, length uint32, physical bool, pattern []byte) (uint32, error) {
	if len(pattern) == 0 {
		return 0, kdproto.NewStatusError(kdproto.StatusInvalidParameter, errors.New("empty fill pattern"))
	}
	buf := make([]byte, min(int(length), 1<<20))
	for i := range buf {
		buf[i] = pattern[i%len(pattern)]
	}
	var done uint32
	for done < length {
		n := min(uint32(len(buf)), length-done)
		// Keep the pattern phase continuous across chunks.
		piece := buf[:n]
		if int(done)%len(pattern) != 0 {
			piece = make([]byte, n)
			for i := range piece {
				piece[i] = pattern[(int(done)+i)%len(pattern)]
			}
		}
		var w int
		var err error
		if physical {
			w, err = t.WritePhysical(ctx, addr+uint64(done), piece)
		} else {
			w, err = t.WriteVirtual(ctx, cpu, addr+uint64(done), piece)
		}
		done += uint32(w)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}
