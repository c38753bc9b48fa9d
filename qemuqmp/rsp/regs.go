package rsp

import (
	"context"
	"fmt"
)

// ReadAllRegisters returns the raw g image of thread t (608 bytes on QEMU x86-64).
func (c *Client) ReadAllRegisters(ctx context.Context, t ThreadID) ([]byte, error) {
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	defer c.release()
	if err := c.selectThreadLocked(ctx, "Hg", t); err != nil {
		return nil, err
	}
	r, _, err := c.exchangeLocked(ctx, []string{"g"}, false, false)
	if err != nil {
		return nil, fmt.Errorf("g (%s): %w", t, err)
	}
	if err := replyError(r[0]); err != nil {
		return nil, fmt.Errorf("g (%s): %w", t, err)
	}
	data, err := decodeHex(r[0])
	if err != nil {
		return nil, fmt.Errorf("g (%s): %w", t, err)
	}
	if c.regs != nil && len(data) < c.regs.Size {
		return nil, fmt.Errorf("g (%s): %d bytes, target.xml describes %d: %w", t, len(data), c.regs.Size, ErrMalformed)
	}
	return data, nil
}

// ReadRegister returns one register's raw little-endian bytes (p).
func (c *Client) ReadRegister(ctx context.Context, t ThreadID, name string) ([]byte, error) {
	reg, ok := c.regs.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("register %q not in target.xml: %w", name, ErrUnsupported)
	}
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	defer c.release()
	if err := c.selectThreadLocked(ctx, "Hg", t); err != nil {
		return nil, err
	}
	pkt := fmt.Sprintf("p%x", reg.Num)
	r, _, err := c.exchangeLocked(ctx, []string{pkt}, false, false)
	if err != nil {
		return nil, fmt.Errorf("%s (%s %s): %w", pkt, name, t, err)
	}
	if err := replyError(r[0]); err != nil {
		return nil, fmt.Errorf("%s (%s %s): %w", pkt, name, t, err)
	}
	if len(r[0]) == 0 {
		return nil, fmt.Errorf("%s (%s): %w", pkt, name, ErrUnsupported)
	}
	data, err := decodeHex(r[0])
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", pkt, name, err)
	}
	if len(data) != reg.Bits/8 {
		return nil, fmt.Errorf("%s (%s): %d bytes, want %d: %w", pkt, name, len(data), reg.Bits/8, ErrMalformed)
	}
	return data, nil
}

// WriteRegisters writes registers of thread t with P, one packet each, pipelined in one exchange.
func (c *Client) WriteRegisters(ctx context.Context, t ThreadID, values map[string][]byte) error {
	if len(values) == 0 {
		return nil
	}
	var pkts []string
	for name, v := range values {
		reg, ok := c.regs.Lookup(name)
		if !ok {
			return fmt.Errorf("register %q not in target.xml: %w", name, ErrUnsupported)
		}
		if len(v) != reg.Bits/8 {
			return fmt.Errorf("register %q: %d bytes, want %d", name, len(v), reg.Bits/8)
		}
		pkts = append(pkts, string(encodeHex(fmt.Appendf(nil, "P%x=", reg.Num), v)))
	}
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	if err := c.selectThreadLocked(ctx, "Hg", t); err != nil {
		return err
	}
	r, _, err := c.exchangeLocked(ctx, pkts, false, false)
	if err != nil {
		return fmt.Errorf("write %d registers (%s): %w", len(pkts), t, err)
	}
	for i, p := range r {
		if err := checkOK(pkts[i][:min(len(pkts[i]), 8)], p); err != nil {
			return err
		}
	}
	return nil
}

// Breakpoint and watchpoint types of Z/z.
const (
	ZSoftware = 0
	ZHardware = 1
	ZWrite    = 2
	ZRead     = 3
	ZAccess   = 4
)

// InsertBreakpoint sends Zkind,addr,length. Under TCG every kind lives in the emulator and guest memory is
// untouched; under KVM a Z0 writes 0xCC into guest RAM (qemu.md §8), which callers must decide about.
func (c *Client) InsertBreakpoint(ctx context.Context, kind int, addr uint64, length int) error {
	return c.expectOK(ctx, fmt.Sprintf("Z%d,%x,%x", kind, addr, length))
}

// RemoveBreakpoint sends zkind,addr,length.
func (c *Client) RemoveBreakpoint(ctx context.Context, kind int, addr uint64, length int) error {
	return c.expectOK(ctx, fmt.Sprintf("z%d,%x,%x", kind, addr, length))
}
