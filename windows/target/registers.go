package target

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/kdproto"
)

// GetContext implements kdproto.Target.
func (t *Target) GetContext(ctx context.Context, cpu int) (*kdproto.Context, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, err := t.registers(ctx, cpu)
	if err != nil {
		return nil, err
	}
	return contextFromRegisters(&r, &t.dr[cpu]), nil
}

// SetContext implements kdproto.Target: only the fields that differ from what GetContext serves now are
// written back, so a debugger that echoes the whole record does not disturb state it did not change.
func (t *Target) SetContext(ctx context.Context, cpu int, c *kdproto.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, err := t.registers(ctx, cpu)
	if err != nil {
		return err
	}
	old := contextFromRegisters(&r, &t.dr[cpu])
	groups, drChanged, trace := applyContext(old, c, &r, &t.dr[cpu])
	if trace {
		t.traceNextStep = true
	}
	if err := t.setRegisters(ctx, cpu, r, groups); err != nil {
		return err
	}
	if drChanged {
		return t.syncHardware(ctx)
	}
	return nil
}

// ReadControlSpace implements kdproto.Target (kd-protocol.md §5.1).
func (t *Target) ReadControlSpace(ctx context.Context, cpu int, addr uint64, buf []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkCPU(cpu); err != nil {
		return 0, err
	}
	var src []byte
	switch addr {
	case kdproto.ControlSpaceKPCR, kdproto.ControlSpaceKPRCB, kdproto.ControlSpaceKThread:
		var v uint64
		var err error
		switch addr {
		case kdproto.ControlSpaceKPCR:
			v, err = t.kpcr(ctx, cpu)
		case kdproto.ControlSpaceKPRCB:
			v, err = t.kprcb(ctx, cpu)
		default:
			v, err = t.currentThread(ctx, cpu)
		}
		if err != nil {
			return 0, err
		}
		src = binary.LittleEndian.AppendUint64(nil, v)
	case kdproto.ControlSpaceKSpecial:
		r, err := t.registers(ctx, cpu)
		if err != nil {
			return 0, err
		}
		src, err = kspecialFromRegisters(&r, &t.dr[cpu]).Encode(t.k.kspecialSize())
		if err != nil {
			return 0, err
		}
	default:
		return 0, kdproto.NewStatusError(kdproto.StatusUnsuccessful, fmt.Errorf("control space address %#x", addr))
	}
	return copy(buf, src), nil
}

// WriteControlSpace implements kdproto.Target: only KSPECIAL_REGISTERS (address 2) is writable, and only its
// changed fields reach the machine.
func (t *Target) WriteControlSpace(ctx context.Context, cpu int, addr uint64, data []byte) (int, error) {
	if addr != kdproto.ControlSpaceKSpecial {
		return 0, kdproto.NewStatusError(kdproto.StatusUnsuccessful, fmt.Errorf("control space address %#x is not writable", addr))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r, err := t.registers(ctx, cpu)
	if err != nil {
		return 0, err
	}
	old := kspecialFromRegisters(&r, &t.dr[cpu])
	full, err := old.Encode(kdproto.KSpecialSizeWin10)
	if err != nil {
		return 0, err
	}
	n := copy(full, data)
	next, _, err := kdproto.DecodeKSpecialRegisters(full)
	if err != nil {
		return 0, fmt.Errorf("decode KSPECIAL_REGISTERS write: %w", err)
	}
	groups, drChanged := applyKSpecial(old, next, &r, &t.dr[cpu])
	if err := t.setRegisters(ctx, cpu, r, groups); err != nil {
		return 0, err
	}
	if drChanged {
		if err := t.syncHardware(ctx); err != nil {
			return n, err
		}
	}
	return n, nil
}

// Architectural MSR numbers the emulator exposes as registers.
const (
	msrEFER         = 0xC0000080
	msrFSBase       = 0xC0000100
	msrGSBase       = 0xC0000101
	msrKernelGSBase = 0xC0000102
)

// errNoSuchMSR is what a kernel answers for an MSR it cannot read (STATUS_NO_SUCH_DEVICE).
func errNoSuchMSR(msr uint32) error {
	return kdproto.NewStatusError(kdproto.StatusNoSuchDevice, fmt.Errorf("MSR %#x is not exposed by the emulator", msr))
}

// ReadMSR implements kdproto.Target for the MSRs QEMU exposes through its register file.
func (t *Target) ReadMSR(ctx context.Context, cpu int, msr uint32) (uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, err := t.registers(ctx, cpu)
	if err != nil {
		return 0, err
	}
	switch msr {
	case msrEFER:
		return r.EFER, nil
	case msrFSBase:
		return r.FSBase, nil
	case msrGSBase:
		return r.GSBase, nil
	case msrKernelGSBase:
		return r.KernelGSBase, nil
	}
	return 0, errNoSuchMSR(msr)
}

// WriteMSR implements kdproto.Target for the same MSRs.
func (t *Target) WriteMSR(ctx context.Context, cpu int, msr uint32, v uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, err := t.registers(ctx, cpu)
	if err != nil {
		return err
	}
	var g amd64.Groups
	switch msr {
	case msrEFER:
		r.EFER, g = v, amd64.HaveControl
	case msrFSBase:
		r.FSBase, g = v, amd64.HaveBases
	case msrGSBase:
		r.GSBase, g = v, amd64.HaveBases
	case msrKernelGSBase:
		r.KernelGSBase, g = v, amd64.HaveBases
	default:
		return errNoSuchMSR(msr)
	}
	return t.setRegisters(ctx, cpu, r, g)
}

// ReadIoSpace implements kdproto.Target through the machine's port I/O, when it has one.
func (t *Target) ReadIoSpace(ctx context.Context, cpu int, io kdproto.IoAccess) (uint32, error) {
	pio, port, err := t.portAccess(cpu, io)
	if err != nil {
		return 0, err
	}
	v, err := pio.InPort(ctx, port, int(io.Size))
	if err != nil {
		return 0, fmt.Errorf("in%d from port %#x: %w", io.Size*8, port, err)
	}
	return v, nil
}

// WriteIoSpace implements kdproto.Target.
func (t *Target) WriteIoSpace(ctx context.Context, cpu int, io kdproto.IoAccess) error {
	pio, port, err := t.portAccess(cpu, io)
	if err != nil {
		return err
	}
	if err := pio.OutPort(ctx, port, int(io.Size), io.Value); err != nil {
		return fmt.Errorf("out%d %#x to port %#x: %w", io.Size*8, io.Value, port, err)
	}
	return nil
}

// portAccess validates an I/O request the way KdpSysReadIoSpace does.
func (t *Target) portAccess(cpu int, io kdproto.IoAccess) (PortIO, uint16, error) {
	if err := t.checkCPU(cpu); err != nil {
		return nil, 0, err
	}
	pio, ok := t.m.(PortIO)
	if !ok {
		return nil, 0, kdproto.ErrNotSupported
	}
	if io.Extended && (io.AddressSpace != 1 || (io.InterfaceType != 0 && io.InterfaceType != 1) || io.BusNumber != 0) {
		return nil, 0, kdproto.NewStatusError(kdproto.StatusUnsuccessful,
			fmt.Errorf("I/O space: interface %d bus %d address space %d", io.InterfaceType, io.BusNumber, io.AddressSpace))
	}
	switch io.Size {
	case 1, 2, 4:
	default:
		return nil, 0, kdproto.NewStatusError(kdproto.StatusInvalidParameter, fmt.Errorf("I/O size %d", io.Size))
	}
	if io.Address%uint64(io.Size) != 0 {
		return nil, 0, kdproto.NewStatusError(kdproto.StatusDatatypeMisalignment, fmt.Errorf("port %#x is not %d-aligned", io.Address, io.Size))
	}
	if io.Address > 0xFFFF {
		return nil, 0, kdproto.NewStatusError(kdproto.StatusInvalidParameter, fmt.Errorf("port %#x beyond 0xffff", io.Address))
	}
	return pio, uint16(io.Address), nil
}

// GetBusData implements kdproto.Target: QEMU offers no bus configuration access the stub could use without
// running guest code, so the debugger falls back.
func (t *Target) GetBusData(context.Context, kdproto.BusAccess, []byte) (int, error) {
	return 0, kdproto.ErrNotSupported
}

// SetBusData implements kdproto.Target (see GetBusData).
func (t *Target) SetBusData(context.Context, kdproto.BusAccess, []byte) (int, error) {
	return 0, kdproto.ErrNotSupported
}
