package kdproto_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdtest"
	"github.com/kdstub/kdstub/kdproto/serial"
)

// memTarget is a small in-test debuggee: memory at base, two CPUs with a context each, a breakpoint table,
// and run control whose stops the test triggers through the stop channel.
type memTarget struct {
	mu       sync.Mutex
	base     uint64
	mem      []byte
	ctxs     [2]kdproto.Context
	bps      map[uint32]uint64
	running  bool
	current  int
	pending  *kdproto.StateChange
	stops    chan *kdproto.StateChange
	conts    []kdproto.ContinueRequest
	breaks   int
	setCtxs  int
	stepNext bool
}

func newMemTarget() *memTarget {
	mt := &memTarget{base: 0xfffff80000000000, mem: make([]byte, 3*4096), bps: map[uint32]uint64{},
		running: true, stops: make(chan *kdproto.StateChange, 4)}
	for i := range mt.mem {
		mt.mem[i] = byte(i * 7)
	}
	for i := range mt.ctxs {
		mt.ctxs[i] = kdproto.Context{ContextFlags: kdproto.ContextAll, SegCs: 0x10, Rip: mt.base + uint64(0x100*(i+1)), Rax: uint64(i)}
	}
	return mt
}

func (mt *memTarget) sc(cpu int, code uint32) *kdproto.StateChange {
	return &kdproto.StateChange{NewState: kdproto.StateChangeException, Processor: uint16(cpu), NumberProcessors: 2,
		ProgramCounter: mt.ctxs[cpu].Rip, U: &kdproto.Exception64{ExceptionCode: code, ExceptionAddress: mt.ctxs[cpu].Rip,
			FirstChance: 1}}
}

func (mt *memTarget) NumberProcessors() int { return 2 }
func (mt *memTarget) GetVersion(context.Context) (*kdproto.GetVersion64, error) {
	return kdproto.DefaultGetVersion64(19041, mt.base, mt.base+0x10, mt.base+0x20), nil
}
func (mt *memTarget) ReadVirtual(_ context.Context, cpu int, va uint64, buf []byte) (int, error) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if cpu != mt.current {
		return 0, errors.New("virtual reads happen in the stopped CPU's context")
	}
	if va < mt.base || va >= mt.base+uint64(len(mt.mem)) {
		return 0, errors.New("unmapped")
	}
	n := copy(buf, mt.mem[va-mt.base:])
	if n < len(buf) {
		return n, errors.New("unmapped tail")
	}
	return n, nil
}
func (mt *memTarget) WriteVirtual(_ context.Context, _ int, va uint64, data []byte) (int, error) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if va < mt.base || va >= mt.base+uint64(len(mt.mem)) {
		return 0, errors.New("unmapped")
	}
	return copy(mt.mem[va-mt.base:], data), nil
}
func (mt *memTarget) ReadPhysical(ctx context.Context, pa uint64, buf []byte) (int, error) {
	return mt.ReadVirtual(ctx, 0, pa+mt.base, buf)
}
func (mt *memTarget) WritePhysical(ctx context.Context, pa uint64, data []byte) (int, error) {
	return mt.WriteVirtual(ctx, 0, pa+mt.base, data)
}
func (mt *memTarget) QueryMemory(context.Context, int, uint64) (uint32, uint32, error) {
	return 2, 7, nil
}
func (mt *memTarget) SearchMemory(_ context.Context, _ int, start, length uint64, pat []byte) (uint64, error) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	off := start - mt.base
	end := min(off+length, uint64(len(mt.mem)))
	if i := bytes.Index(mt.mem[off:end], pat); i >= 0 {
		return start + uint64(i), nil
	}
	return 0, kdproto.ErrNotFound
}
func (mt *memTarget) FillMemory(context.Context, int, uint64, uint32, bool, []byte) (uint32, error) {
	return 0, kdproto.ErrNotSupported
}
func (mt *memTarget) GetContext(_ context.Context, cpu int) (*kdproto.Context, error) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	c := mt.ctxs[cpu]
	return &c, nil
}
func (mt *memTarget) SetContext(_ context.Context, cpu int, c *kdproto.Context) error {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	mt.ctxs[cpu] = *c
	mt.setCtxs++
	return nil
}
func (mt *memTarget) ReadControlSpace(_ context.Context, cpu int, addr uint64, buf []byte) (int, error) {
	if addr != kdproto.ControlSpaceKSpecial {
		return copy(buf, binary.LittleEndian.AppendUint64(nil, 0xfffff80000100000+uint64(cpu))), nil
	}
	k := kdproto.KSpecialRegisters{Cr3: 0x1ab000}
	b, _ := k.Encode(kdproto.KSpecialSizeWin10)
	return copy(buf, b), nil
}
func (mt *memTarget) WriteControlSpace(_ context.Context, _ int, addr uint64, data []byte) (int, error) {
	if addr != 2 {
		return 0, kdproto.ErrNotSupported
	}
	return len(data), nil
}
func (mt *memTarget) ReadMSR(_ context.Context, _ int, msr uint32) (uint64, error) {
	if msr == 0xC0000080 {
		return 0xd01, nil
	}
	return 0, kdproto.NewStatusError(kdproto.StatusNoSuchDevice, errors.New("no such msr"))
}
func (mt *memTarget) WriteMSR(context.Context, int, uint32, uint64) error {
	return kdproto.ErrNotSupported
}
func (mt *memTarget) ReadIoSpace(context.Context, int, kdproto.IoAccess) (uint32, error) {
	return 0xff, nil
}
func (mt *memTarget) WriteIoSpace(context.Context, int, kdproto.IoAccess) error { return nil }
func (mt *memTarget) GetBusData(context.Context, kdproto.BusAccess, []byte) (int, error) {
	return 0, kdproto.ErrNotSupported
}
func (mt *memTarget) SetBusData(context.Context, kdproto.BusAccess, []byte) (int, error) {
	return 0, kdproto.ErrNotSupported
}
func (mt *memTarget) WriteBreakpoint(_ context.Context, va uint64) (uint32, error) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	for h := uint32(1); h <= 32; h++ {
		if _, ok := mt.bps[h]; !ok {
			mt.bps[h] = va
			return h, nil
		}
	}
	return 0, errors.New("full")
}
func (mt *memTarget) RestoreBreakpoint(_ context.Context, h uint32) error {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if _, ok := mt.bps[h]; !ok {
		return errors.New("no such handle")
	}
	delete(mt.bps, h)
	return nil
}
func (mt *memTarget) Continue(_ context.Context, c kdproto.ContinueRequest) error {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	mt.conts = append(mt.conts, c)
	mt.running, mt.pending = true, nil
	if c.TraceFlag {
		mt.ctxs[mt.current].Rip++
		mt.stops <- mt.sc(mt.current, kdproto.StatusSingleStep)
	}
	return nil
}
func (mt *memTarget) Break(context.Context) error {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	mt.breaks++
	mt.stops <- mt.sc(mt.current, kdproto.StatusBreakpoint)
	return nil
}
func (mt *memTarget) WaitStop(ctx context.Context) (*kdproto.StateChange, error) {
	select {
	case sc := <-mt.stops:
		mt.mu.Lock()
		mt.running, mt.pending = false, sc
		mt.mu.Unlock()
		return sc, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (mt *memTarget) SwitchProcessor(_ context.Context, cpu int) (*kdproto.StateChange, error) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	mt.current = cpu
	mt.pending = mt.sc(cpu, kdproto.StatusBreakpoint)
	return mt.pending, nil
}
func (mt *memTarget) Stopped(context.Context) (*kdproto.StateChange, error) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if mt.running {
		return nil, nil
	}
	return mt.pending, nil
}

// rig is a server over KD serial on net.Pipe with a host session on the other end.
type rig struct {
	host *kdproto.HostSession
	rec  *kdtest.Recorder
	mt   *memTarget
	done chan error
}

func startRig(t *testing.T, mt *memTarget) *rig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, b := net.Pipe()
	rec := kdtest.NewRecorder(serial.New(b))
	cfg := kdproto.Config{Dialect: kdproto.DialectKDCOM, RetransmitInterval: 200 * time.Millisecond}
	ts := kdproto.NewTarget(rec, cfg)
	host := kdproto.NewHost(serial.New(a), cfg)
	r := &rig{host: host, rec: rec, mt: mt, done: make(chan error, 1)}
	srv := &kdproto.Server{Target: mt}
	go func() { r.done <- srv.Serve(ctx, ts) }()
	go func() { _ = host.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		a.Close()
		b.Close()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("server did not stop")
		}
	})
	return r
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func request(t *testing.T, ctx context.Context, h *kdproto.HostSession, api uint32, u kdproto.ManipulateUnion, data []byte) *kdproto.Manipulate {
	t.Helper()
	m, err := kdproto.NewManipulate(api, u, data)
	require.NoError(t, err)
	r, err := h.Request(ctx, m)
	require.NoError(t, err)
	return r
}

// attach performs break-in and RESET as WinDbg does and returns the break-in state change.
func attach(t *testing.T, ctx context.Context, r *rig) *kdproto.StateChange {
	t.Helper()
	sc, err := r.host.BreakIn(ctx)
	require.NoError(t, err)
	return sc
}

func TestServerBreakInReportsStateChangeAndResetResendsIt(t *testing.T) {
	ctx := tctx(t)
	r := startRig(t, newMemTarget())
	sc := attach(t, ctx, r)
	require.Equal(t, kdproto.StateChangeException, sc.NewState)
	require.Equal(t, kdproto.StatusBreakpoint, sc.U.(*kdproto.Exception64).ExceptionCode)
	require.NoError(t, r.host.Reset(ctx))
	again, err := r.host.WaitStateChange(ctx)
	require.NoError(t, err)
	require.Equal(t, sc.ProgramCounter, again.ProgramCounter, "RESET re-sends the pending state change")
	// Stray break-ins while stopped are ignored: no state change, and the target is asked to break only once.
	short, cancel := context.WithTimeout(ctx, 600*time.Millisecond)
	_, err = r.host.BreakIn(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	v := request(t, ctx, r.host, kdproto.APIGetVersion, nil, nil)
	require.Equal(t, kdproto.StatusSuccess, v.ReturnStatus)
	r.mt.mu.Lock()
	require.Equal(t, 1, r.mt.breaks)
	r.mt.mu.Unlock()
}

func TestServerAnswersPerRules(t *testing.T) {
	ctx := tctx(t)
	mt := newMemTarget()
	r := startRig(t, mt)
	attach(t, ctx, r)
	h := r.host

	t.Run("GetVersion echoes junk and fills the block", func(t *testing.T) {
		m, err := kdproto.NewManipulate(kdproto.APIGetVersion, nil, nil)
		require.NoError(t, err)
		m.ProcessorLevel, m.Processor, m.ReturnStatus, m.Pad = 0x25, 0xFFFF, 0x103, 0xdeadbeef
		resp, err := h.Request(ctx, m)
		require.NoError(t, err)
		require.Equal(t, uint16(0x25), resp.ProcessorLevel)
		require.Equal(t, uint16(0xFFFF), resp.Processor)
		require.Equal(t, uint32(0xdeadbeef), resp.Pad)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		v := resp.U.(*kdproto.GetVersion64)
		require.Equal(t, uint16(7), v.Flags)
		require.Equal(t, uint8(0x31), v.MaxManipulate)
		require.Equal(t, mt.base, v.KernBase)
	})
	t.Run("ReadVirtual clamps to 3944", func(t *testing.T) {
		resp := request(t, ctx, h, kdproto.APIReadVirtualMemory, &kdproto.ReadMemory64{TargetBaseAddress: mt.base, TransferCount: 5000}, nil)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		require.Equal(t, uint32(kdproto.MaxManipulateData), resp.U.(*kdproto.ReadMemory64).ActualBytesRead)
		require.Equal(t, mt.mem[:kdproto.MaxManipulateData], resp.Data)
	})
	t.Run("partial read reports ActualBytesRead and 0xC0000001", func(t *testing.T) {
		va := mt.base + uint64(len(mt.mem)) - 16
		resp := request(t, ctx, h, kdproto.APIReadVirtualMemory, &kdproto.ReadMemory64{TargetBaseAddress: va, TransferCount: 64}, nil)
		require.Equal(t, kdproto.StatusUnsuccessful, resp.ReturnStatus)
		require.Equal(t, uint32(16), resp.U.(*kdproto.ReadMemory64).ActualBytesRead)
		require.Equal(t, mt.mem[len(mt.mem)-16:], resp.Data)
	})
	t.Run("junk Processor on a virtual read is ignored", func(t *testing.T) {
		m, err := kdproto.NewManipulate(kdproto.APIReadVirtualMemory, &kdproto.ReadMemory64{TargetBaseAddress: mt.base, TransferCount: 8}, nil)
		require.NoError(t, err)
		m.Processor, m.ProcessorLevel = 0x6E, 0x7FFE
		resp, err := h.Request(ctx, m)
		require.NoError(t, err)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		require.Equal(t, mt.mem[:8], resp.Data)
	})
	t.Run("failed read has no data", func(t *testing.T) {
		resp := request(t, ctx, h, kdproto.APIReadVirtualMemory, &kdproto.ReadMemory64{TargetBaseAddress: 0x1000, TransferCount: 8}, nil)
		require.Equal(t, kdproto.StatusUnsuccessful, resp.ReturnStatus)
		require.Zero(t, resp.U.(*kdproto.ReadMemory64).ActualBytesRead)
		require.Empty(t, resp.Data)
	})
	t.Run("WriteVirtual", func(t *testing.T) {
		resp := request(t, ctx, h, kdproto.APIWriteVirtualMemory, &kdproto.WriteMemory64{TargetBaseAddress: mt.base + 8, TransferCount: 4}, []byte{1, 2, 3, 4})
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		require.Equal(t, uint32(4), resp.U.(*kdproto.WriteMemory64).ActualBytesWritten)
		require.Empty(t, resp.Data)
		mt.mu.Lock()
		require.Equal(t, []byte{1, 2, 3, 4}, mt.mem[8:12])
		mt.mu.Unlock()
	})
	t.Run("unknown API", func(t *testing.T) {
		m := &kdproto.Manipulate{APINumber: 0x3199, U: &kdproto.RawUnion{}}
		m.U.(*kdproto.RawUnion).Bytes[0] = 0x42
		resp, err := h.Request(ctx, m)
		require.NoError(t, err)
		require.Equal(t, uint32(0x3199), resp.APINumber)
		require.Equal(t, kdproto.StatusUnsuccessful, resp.ReturnStatus)
		require.Empty(t, resp.Data)
		require.Equal(t, byte(0x42), resp.U.(*kdproto.RawUnion).Bytes[0], "the request's union is echoed")
	})
	t.Run("GetContext and GetContextEx", func(t *testing.T) {
		m, err := kdproto.NewManipulate(kdproto.APIGetContext, nil, nil)
		require.NoError(t, err)
		m.Processor = 1
		resp, err := h.Request(ctx, m)
		require.NoError(t, err)
		require.Len(t, resp.Data, kdproto.ContextSize)
		c, err := kdproto.DecodeContext(resp.Data)
		require.NoError(t, err)
		require.Equal(t, mt.ctxs[1].Rip, c.Rip)

		ex := request(t, ctx, h, kdproto.APIGetContextEx, &kdproto.ContextEx{Offset: 0xF8, ByteCount: 8}, nil)
		require.Equal(t, kdproto.StatusSuccess, ex.ReturnStatus)
		require.Equal(t, uint32(8), ex.U.(*kdproto.ContextEx).BytesCopied)
		require.Equal(t, mt.ctxs[0].Rip, binary.LittleEndian.Uint64(ex.Data))

		bad := request(t, ctx, h, kdproto.APIGetContextEx, &kdproto.ContextEx{Offset: 0x4C8, ByteCount: 16}, nil)
		require.Equal(t, kdproto.StatusUnsuccessful, bad.ReturnStatus)
		require.Zero(t, bad.U.(*kdproto.ContextEx).BytesCopied)
	})
	t.Run("SetContextEx patches one field", func(t *testing.T) {
		rip := mt.base + 0x777
		resp := request(t, ctx, h, kdproto.APISetContextEx, &kdproto.ContextEx{Offset: 0xF8, ByteCount: 8},
			binary.LittleEndian.AppendUint64(nil, rip))
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		mt.mu.Lock()
		require.Equal(t, rip, mt.ctxs[0].Rip)
		require.Equal(t, uint64(0), mt.ctxs[0].Rax)
		mt.mu.Unlock()
	})
	t.Run("SetContext", func(t *testing.T) {
		c := mt.ctxs[0]
		c.Rbx = 0x1234
		b, err := c.MarshalBinary()
		require.NoError(t, err)
		resp := request(t, ctx, h, kdproto.APISetContext, &kdproto.SetContext{ContextFlags: 0x10001F}, b)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		require.Empty(t, resp.Data)
		mt.mu.Lock()
		require.Equal(t, uint64(0x1234), mt.ctxs[0].Rbx)
		mt.mu.Unlock()
	})
	t.Run("control space", func(t *testing.T) {
		resp := request(t, ctx, h, kdproto.APIReadControlSpace, &kdproto.ReadMemory64{TargetBaseAddress: 2, TransferCount: 0xE0}, nil)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		require.Len(t, resp.Data, 0xE0)
		require.Equal(t, uint64(0x1ab000), binary.LittleEndian.Uint64(resp.Data[0x10:]))
		resp = request(t, ctx, h, kdproto.APIReadControlSpace, &kdproto.ReadMemory64{TargetBaseAddress: 0, TransferCount: 0x100}, nil)
		require.Equal(t, uint32(8), resp.U.(*kdproto.ReadMemory64).ActualBytesRead)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
	})
	t.Run("search", func(t *testing.T) {
		pat := mt.mem[100:104]
		resp := request(t, ctx, h, kdproto.APISearchMemory, &kdproto.SearchMemory{SearchAddress: mt.base + 50, SearchLength: 200, PatternLength: 4}, pat)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		require.Equal(t, mt.base+uint64(bytes.Index(mt.mem[50:], pat))+50, resp.U.(*kdproto.SearchMemory).SearchAddress)
		resp = request(t, ctx, h, kdproto.APISearchMemory, &kdproto.SearchMemory{SearchAddress: mt.base, SearchLength: 64, PatternLength: 4}, []byte("none"))
		require.Equal(t, kdproto.StatusNoMoreEntries, resp.ReturnStatus)
	})
	t.Run("MSR", func(t *testing.T) {
		resp := request(t, ctx, h, kdproto.APIReadMachineSpecificRegister, &kdproto.ReadWriteMSR{Msr: 0xC0000080}, nil)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		require.Equal(t, uint32(0xd01), resp.U.(*kdproto.ReadWriteMSR).DataValueLow)
		resp = request(t, ctx, h, kdproto.APIReadMachineSpecificRegister, &kdproto.ReadWriteMSR{Msr: 0xC0000082}, nil)
		require.Equal(t, kdproto.StatusNoSuchDevice, resp.ReturnStatus)
	})
	t.Run("breakpoints", func(t *testing.T) {
		for h1 := uint32(1); h1 <= 32; h1++ {
			resp := request(t, ctx, h, kdproto.APIRestoreBreakPoint, &kdproto.RestoreBreakpoint{BreakPointHandle: h1}, nil)
			require.Equal(t, kdproto.StatusUnsuccessful, resp.ReturnStatus, "probe of free handle %d fails", h1)
		}
		resp := request(t, ctx, h, kdproto.APIWriteBreakPoint, &kdproto.WriteBreakpoint64{BreakPointAddress: mt.base + 0x40}, nil)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		handle := resp.U.(*kdproto.WriteBreakpoint64).BreakPointHandle
		require.Equal(t, uint32(1), handle)
		resp = request(t, ctx, h, kdproto.APIRestoreBreakPoint, &kdproto.RestoreBreakpoint{BreakPointHandle: handle}, nil)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)

		entries := make([]byte, 32)
		binary.LittleEndian.PutUint64(entries, mt.base+0x10)
		binary.LittleEndian.PutUint64(entries[16:], mt.base+0x20)
		resp = request(t, ctx, h, kdproto.APIWriteBreakPointEx, &kdproto.BreakpointEx{BreakPointCount: 2}, entries)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		require.Equal(t, uint32(1), binary.LittleEndian.Uint32(resp.Data[8:]))
		require.Equal(t, uint32(2), binary.LittleEndian.Uint32(resp.Data[24:]))
		resp = request(t, ctx, h, kdproto.APIRestoreBreakPointEx, &kdproto.BreakpointEx{BreakPointCount: 2}, resp.Data)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		require.Empty(t, mt.bps)
	})
	t.Run("QueryMemory rejects other address spaces", func(t *testing.T) {
		resp := request(t, ctx, h, kdproto.APIQueryMemory, &kdproto.QueryMemory{Address: mt.base, AddressSpace: 0}, nil)
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus)
		require.Equal(t, uint32(2), resp.U.(*kdproto.QueryMemory).AddressSpace)
		resp = request(t, ctx, h, kdproto.APIQueryMemory, &kdproto.QueryMemory{Address: mt.base, AddressSpace: 3}, nil)
		require.Equal(t, kdproto.StatusInvalidParameter, resp.ReturnStatus)
	})
}

// sentManipulates returns the ApiNumbers of manipulate responses the target sent.
func sentManipulates(t *testing.T, rec *kdtest.Recorder) []uint32 {
	var out []uint32
	for _, p := range rec.Log() {
		if p.Sent && p.P.IsData() && p.P.Type == kdproto.PacketTypeManipulate {
			m, err := kdproto.DecodeManipulate(p.P.Data)
			require.NoError(t, err)
			out = append(out, m.APINumber)
		}
	}
	return out
}

func TestServerNoReplyAPIs(t *testing.T) {
	ctx := tctx(t)
	mt := newMemTarget()
	r := startRig(t, mt)
	attach(t, ctx, r)
	h := r.host

	// ClearAllInternalBreakpoints, Reboot and CauseBugCheck are accepted silently.
	for _, api := range []uint32{kdproto.APIClearAllInternalBreakpoints, kdproto.APIReboot, kdproto.APICauseBugCheck} {
		m, err := kdproto.NewManipulate(api, nil, nil)
		require.NoError(t, err)
		_, err = h.Request(ctx, m)
		require.NoError(t, err)
	}
	request(t, ctx, h, kdproto.APIGetVersion, nil, nil)

	// SwitchProcessor answers with a state change from the new CPU, not a manipulate response.
	m, err := kdproto.NewManipulate(kdproto.APISwitchProcessor, nil, nil)
	require.NoError(t, err)
	m.Processor = 1
	_, err = h.Request(ctx, m)
	require.NoError(t, err)
	sc, err := h.WaitStateChange(ctx)
	require.NoError(t, err)
	require.Equal(t, uint16(1), sc.Processor)
	require.Equal(t, mt.ctxs[1].Rip, sc.ProgramCounter)

	// Continue2 with TraceFlag: no reply; the step is reported as a new state change.
	_, err = h.Request(ctx, mustManip(t, kdproto.APIContinue2, &kdproto.Continue2{ContinueStatus: kdproto.DBGContinue, TraceFlag: 1, Dr7: 0x400, CurrentSymbolStart: 1}))
	require.NoError(t, err)
	sc, err = h.WaitStateChange(ctx)
	require.NoError(t, err)
	require.Equal(t, kdproto.StatusSingleStep, sc.U.(*kdproto.Exception64).ExceptionCode)

	// Continue: no reply; the guest runs until a break-in.
	_, err = h.Request(ctx, mustManip(t, kdproto.APIContinue, &kdproto.Continue{ContinueStatus: kdproto.DBGContinue}))
	require.NoError(t, err)
	sc = attach(t, ctx, r)
	require.Equal(t, kdproto.StatusBreakpoint, sc.U.(*kdproto.Exception64).ExceptionCode)

	request(t, ctx, h, kdproto.APIGetVersion, nil, nil)
	require.Equal(t, []uint32{kdproto.APIGetVersion, kdproto.APIGetVersion}, sentManipulates(t, r.rec))
	mt.mu.Lock()
	defer mt.mu.Unlock()
	require.Len(t, mt.conts, 2)
	require.True(t, mt.conts[0].TraceFlag)
	require.True(t, mt.conts[0].SetDr7)
	require.False(t, mt.conts[1].TraceFlag)
}

func mustManip(t *testing.T, api uint32, u kdproto.ManipulateUnion) *kdproto.Manipulate {
	t.Helper()
	m, err := kdproto.NewManipulate(api, u, nil)
	require.NoError(t, err)
	return m
}

// A new session on a guest left stopped reports the pending stop right away (detach without continue,
// then re-attach).
func TestServerReattachWhileStopped(t *testing.T) {
	ctx := tctx(t)
	mt := newMemTarget()
	r1 := startRig(t, mt)
	sc := attach(t, ctx, r1)
	r2 := startRig(t, mt)
	got, err := r2.host.WaitStateChange(ctx)
	require.NoError(t, err)
	require.Equal(t, sc.ProgramCounter, got.ProgramCounter)
	v := request(t, ctx, r2.host, kdproto.APIGetVersion, nil, nil)
	require.Equal(t, kdproto.StatusSuccess, v.ReturnStatus)
}

// 50 rounds of continue and break-in keep ids and pending state consistent.
func TestServerContinueBreakInLoop(t *testing.T) {
	ctx := tctx(t)
	r := startRig(t, newMemTarget())
	for i := 0; i < 50; i++ {
		sc := attach(t, ctx, r)
		require.Equal(t, kdproto.StatusBreakpoint, sc.U.(*kdproto.Exception64).ExceptionCode, "round %d", i)
		_, err := r.host.Request(ctx, mustManip(t, kdproto.APIContinue2, &kdproto.Continue2{ContinueStatus: kdproto.DBGContinue, Dr7: 0x400, CurrentSymbolStart: 1}))
		require.NoError(t, err)
	}
}

// slowContextTarget answers GetContext slowly, so that requests queued behind it and the end of the session
// are both ready when the server next looks.
type slowContextTarget struct{ *memTarget }

func (st slowContextTarget) GetContext(ctx context.Context, cpu int) (*kdproto.Context, error) {
	time.Sleep(150 * time.Millisecond)
	return st.memTarget.GetContext(ctx, cpu)
}

// A debugger that continues and hangs up at once (a detach) must leave the guest running: the continue was
// acknowledged, so the server honours it even when the session ends before the server dispatched it.
func TestServerHonoursContinueQueuedAtSessionEnd(t *testing.T) {
	for round := range 10 {
		ctx := tctx(t)
		mt := newMemTarget()
		mt.running, mt.pending = false, mt.sc(0, kdproto.StatusBreakpoint)
		sctx, cancel := context.WithCancel(ctx)
		hostSide, targetSide := kdtest.Pair()
		ts := kdproto.NewTarget(targetSide, kdproto.Config{Dialect: kdproto.DialectKDCOM, RetransmitInterval: time.Second})
		done := make(chan error, 1)
		go func() { done <- (&kdproto.Server{Target: slowContextTarget{mt}}).Serve(sctx, ts) }()

		// A raw debugger: a slow request, then the continue behind it, then it hangs up.
		getCtx := mustManip(t, kdproto.APIGetContext, nil)
		cont := mustManip(t, kdproto.APIContinue2, &kdproto.Continue2{ContinueStatus: kdproto.DBGContinue, Dr7: 0x400, CurrentSymbolStart: 1})
		for i, m := range []*kdproto.Manipulate{getCtx, cont} {
			data, err := m.MarshalBinary()
			require.NoError(t, err)
			require.NoError(t, hostSide.WritePacket(ctx, kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 0x80800000|uint32(i), data)))
		}
		time.Sleep(50 * time.Millisecond) // both accepted by the session while the server is in GetContext
		require.NoError(t, hostSide.Close())
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: server did not notice the session end", round)
		}
		cancel()
		mt.mu.Lock()
		conts, running := len(mt.conts), mt.running
		mt.mu.Unlock()
		require.Equal(t, 1, conts, "round %d: the acknowledged continue was not acted on", round)
		require.True(t, running, "round %d", round)
	}
}

// A break-in that arrives while a continue is still queued behind a slow request stops the guest the continue
// resumed, instead of being discarded as a stray byte from a stopped target.
func TestServerBreakInAfterQueuedContinueStops(t *testing.T) {
	for round := range 10 {
		ctx := tctx(t)
		mt := newMemTarget()
		mt.running, mt.pending = false, mt.sc(0, kdproto.StatusBreakpoint)
		hostSide, targetSide := kdtest.Pair()
		ts := kdproto.NewTarget(targetSide, kdproto.Config{Dialect: kdproto.DialectKDCOM, RetransmitInterval: time.Second})
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- (&kdproto.Server{Target: slowContextTarget{mt}}).Serve(sctx, ts) }()

		go func() { // the raw debugger acknowledges whatever the target sends
			for {
				p, err := hostSide.ReadPacket(sctx)
				if err != nil {
					return
				}
				if p.IsData() {
					_ = hostSide.WritePacket(sctx, kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, p.ID))
				}
			}
		}()
		getCtx := mustManip(t, kdproto.APIGetContext, nil)
		cont := mustManip(t, kdproto.APIContinue2, &kdproto.Continue2{ContinueStatus: kdproto.DBGContinue, Dr7: 0x400, CurrentSymbolStart: 1})
		for i, m := range []*kdproto.Manipulate{getCtx, cont} {
			data, err := m.MarshalBinary()
			require.NoError(t, err)
			require.NoError(t, hostSide.WritePacket(ctx, kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 0x80800000|uint32(i), data)))
		}
		time.Sleep(50 * time.Millisecond) // both accepted while the server is in GetContext
		require.NoError(t, hostSide.WritePacket(ctx, kdproto.NewBreakinPacket()))
		require.Eventually(t, func() bool {
			mt.mu.Lock()
			defer mt.mu.Unlock()
			return mt.breaks == 1 && len(mt.conts) == 1
		}, 5*time.Second, 10*time.Millisecond, "round %d: the break-in after the queued continue was lost", round)
		cancel()
		<-done
	}
}
