package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Status is query-status.
type Status struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

// Status returns the VM run state.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.call(ctx, "query-status", nil, &s)
}

// Running reports whether the VM runs (query-status).
func (c *Client) Running(ctx context.Context) (bool, error) {
	s, err := c.Status(ctx)
	return s.Running, err
}

// Stop pauses the VM (event STOP; the gdbstub sees a T02).
func (c *Client) Stop(ctx context.Context) error { return c.call(ctx, "stop", nil, nil) }

// Cont resumes the VM (event RESUME; the gdbstub is not told).
func (c *Client) Cont(ctx context.Context) error { return c.call(ctx, "cont", nil, nil) }

// SystemReset resets the machine (event RESET).
func (c *Client) SystemReset(ctx context.Context) error { return c.call(ctx, "system_reset", nil, nil) }

// Quit makes QEMU exit (event SHUTDOWN, then the connection closes). The connection closing before the reply
// arrives counts as success: that is what quitting does.
func (c *Client) Quit(ctx context.Context) error {
	err := c.call(ctx, "quit", nil, nil)
	if errors.Is(err, ErrGone) {
		return nil
	}
	return err
}

// Pmemsave writes size bytes of guest-physical memory at addr to path (a file QEMU can create). QEMU replies
// only when the file is complete.
func (c *Client) Pmemsave(ctx context.Context, addr, size uint64, path string) error {
	// The QAPI type is int (int64): addresses above INT64_MAX must be sent as their two's complement.
	return c.call(ctx, "pmemsave", map[string]any{"val": int64(addr), "size": int64(size), "filename": path}, nil)
}

// KVM is query-kvm.
type KVM struct {
	Enabled bool `json:"enabled"`
	Present bool `json:"present"`
}

// QueryKVM reports whether the VM runs under KVM.
func (c *Client) QueryKVM(ctx context.Context) (KVM, error) {
	var k KVM
	return k, c.call(ctx, "query-kvm", nil, &k)
}

// Replay is query-replay.
type Replay struct {
	Mode     string `json:"mode"` // none, record, play
	Filename string `json:"filename"`
	Icount   uint64 `json:"icount"`
}

// QueryReplay returns the record/replay mode and the current instruction count.
func (c *Client) QueryReplay(ctx context.Context) (Replay, error) {
	var r Replay
	return r, c.call(ctx, "query-replay", nil, &r)
}

// ReplayBreak stops replay at the given instruction count (the gdbstub sees a T02).
func (c *Client) ReplayBreak(ctx context.Context, icount uint64) error {
	return c.call(ctx, "replay-break", map[string]any{"icount": icount}, nil)
}

// CPU is one entry of query-cpus-fast.
type CPU struct {
	Index    int    `json:"cpu-index"`
	ThreadID int    `json:"thread-id"`
	QOMPath  string `json:"qom-path"`
	Target   string `json:"target"`
}

// CPUs lists the vCPUs.
func (c *Client) CPUs(ctx context.Context) ([]CPU, error) {
	var cpus []CPU
	return cpus, c.call(ctx, "query-cpus-fast", nil, &cpus)
}

func (c *Client) call(ctx context.Context, cmd string, args any, out any) error {
	r, err := c.Execute(ctx, cmd, args)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(r, out); err != nil {
		return fmt.Errorf("%s: decode reply: %v: %w", cmd, err, ErrBadMessage)
	}
	return nil
}

// InfoRegisters runs HMP "info registers <cpu>" and parses it.
func (c *Client) InfoRegisters(ctx context.Context, cpu int) (CPURegisters, error) {
	out, err := c.HMP(ctx, fmt.Sprintf("info registers %d", cpu))
	if err != nil {
		return CPURegisters{}, err
	}
	all, err := ParseInfoRegisters(out)
	if err != nil {
		return CPURegisters{}, fmt.Errorf("info registers %d: %w", cpu, err)
	}
	for _, r := range all {
		if r.CPU == cpu {
			return r, nil
		}
	}
	return CPURegisters{}, fmt.Errorf("info registers %d: output names no CPU#%d: %w", cpu, cpu, ErrBadHMP)
}

// MemoryMap runs HMP "info mtree -f" and returns the flat view of the system address space.
func (c *Client) MemoryMap(ctx context.Context) ([]Region, error) {
	out, err := c.HMP(ctx, "info mtree -f")
	if err != nil {
		return nil, err
	}
	return ParseMemoryMap(out)
}

// PortIn reads an I/O port through HMP "i" (size 1, 2 or 4 bytes).
func (c *Client) PortIn(ctx context.Context, port uint16, size int) (uint32, error) {
	f, err := portFormat(size)
	if err != nil {
		return 0, err
	}
	out, err := c.HMP(ctx, fmt.Sprintf("i /%s 0x%x", f, port))
	if err != nil {
		return 0, err
	}
	// "portb[0x0061] = 0x30"
	_, v, ok := strings.Cut(strings.TrimSpace(out), "= ")
	if !ok {
		return 0, fmt.Errorf("in port 0x%x: output %q: %w", port, out, ErrBadHMP)
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(v), "0x"), 16, 32)
	if err != nil {
		return 0, fmt.Errorf("in port 0x%x: output %q: %w", port, out, ErrBadHMP)
	}
	return uint32(n), nil
}

// PortOut writes an I/O port through HMP "o".
func (c *Client) PortOut(ctx context.Context, port uint16, size int, value uint32) error {
	f, err := portFormat(size)
	if err != nil {
		return err
	}
	out, err := c.HMP(ctx, fmt.Sprintf("o /%s 0x%x 0x%x", f, port, value))
	if err != nil {
		return err
	}
	if s := strings.TrimSpace(out); s != "" {
		return fmt.Errorf("out port 0x%x: %s: %w", port, s, ErrBadHMP)
	}
	return nil
}

func portFormat(size int) (string, error) {
	switch size {
	case 1:
		return "b", nil
	case 2:
		return "w", nil
	case 4:
		return "l", nil
	}
	return "", fmt.Errorf("port access size %d: want 1, 2 or 4", size)
}
