package kdproto

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// responseError is the error a Client returns for a response whose ReturnStatus is not STATUS_SUCCESS: the
// server side's *StatusError, so one type carries an NTSTATUS in both roles. STATUS_UNSUCCESSFUL is how a target
// says "not supported" (kd-protocol.md §2.1), so callers fall back on it rather than giving up.
func responseError(api, status uint32) error {
	return &StatusError{Status: status, Err: fmt.Errorf("%s refused by the target", APIName(api))}
}

// IsStatus reports whether err carries the NTSTATUS status from a target response.
func IsStatus(err error, status uint32) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status == status
}

// Client is the debugger end of KD above the host session: WinDbg's request sequence at attach and one typed
// call per manipulate API. It holds no Windows knowledge beyond what the attach sequence itself reads (the
// debugger data list and the loaded-module list heads, as WinDbg does); interpretation is the caller's.
//
// A Client issues one request at a time (KD is strictly request/response); its methods are safe for concurrent
// use because HostSession serialises requests, but a caller normally drives it from one goroutine.
type Client struct {
	s   *HostSession
	log *slog.Logger

	// Version is the target's GET_VERSION64, read by Attach.
	Version *GetVersion64
	// KDBG is the KDDEBUGGER_DATA64 block (header included) as the target served it during Attach.
	KDBG []byte
	// KDBGAddress is the block's VA (the debugger data list's Flink).
	KDBGAddress uint64
	// Stop is the latest state change (the one the target is stopped at).
	Stop *StateChange
	// ModuleEntries lists the loaded-module list entries Attach walked (their VAs, list order).
	ModuleEntries []uint64

	noContextEx bool // GetContextEx answered "unsupported" once: use GetContext from then on
}

// Attach tuning (kd-protocol.md §8.1/8.2).
const (
	// AttachBreakpointProbes is how many breakpoint handles WinDbg releases at attach (1..0x20).
	AttachBreakpointProbes = 0x20
	// kldrEntryReadSize is how much of each KLDR_DATA_TABLE_ENTRY WinDbg reads (0x88 on x64).
	kldrEntryReadSize = 0x88
	// kldrBaseDllName is the UNICODE_STRING BaseDllName offset in the x64 KLDR_DATA_TABLE_ENTRY.
	kldrBaseDllName = 0x58
	// attachMaxModules bounds the module-list walk Attach performs (the list is guest data).
	attachMaxModules = 512
	// kdbgHeaderSize is DBGKD_DEBUG_DATA_HEADER64 (List, OwnerTag, Size).
	kdbgHeaderSize = 0x18
	// kdbgMaxSize bounds the block size the header may claim.
	kdbgMaxSize = 0x1000
	// KUserSharedDataKernel is KUSER_SHARED_DATA's fixed kernel VA; WinDbg reads it at attach.
	KUserSharedDataKernel = 0xFFFFF78000000000
	// attachBreakInWait is how long one break-in (or RESET) waits for a stop before the other is tried.
	attachBreakInWait = 3 * time.Second
	// resetResendWait is how long Attach waits for the state change a target re-sends after RESET.
	resetResendWait = 2 * time.Second
)

// NewClient wraps a running host session.
func NewClient(s *HostSession, lg *slog.Logger) *Client {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Client{s: s, log: lg}
}

// Session returns the underlying host session.
func (c *Client) Session() *HostSession { return c.s }

// Processor is the CPU the target last reported from; per-CPU requests default to it. A nil Client (an
// engine without a connection, as in tests) reports CPU 0.
func (c *Client) Processor() uint16 {
	if c == nil || c.Stop == nil {
		return 0
	}
	return c.Stop.Processor
}

// NumberProcessors is the CPU count from the latest state change (1 before the first).
func (c *Client) NumberProcessors() int {
	if c.Stop == nil || c.Stop.NumberProcessors == 0 {
		return 1
	}
	return int(c.Stop.NumberProcessors)
}

// Attach performs WinDbg's attach sequence (kd-protocol.md §8.1/§8.2): break in, RESET (the target re-sends its
// stop), GetVersion, the debugger data list → KDBG header → KDBG body, the loaded-module list, RestoreBreakPoint
// 1..0x20, KUSER_SHARED_DATA, GetContextEx (GetContext on "unsupported") and ReadControlSpace(KSPECIAL). The
// transport's own handshake (KDNET poke/response) has happened by the time the first packet goes out.
func (c *Client) Attach(ctx context.Context) error {
	sc, err := c.stopTarget(ctx)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	c.Stop = sc
	if err := c.s.Reset(ctx); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	// The target re-sends its pending stop after RESET; a target that does not is tolerated.
	wctx, cancel := context.WithTimeout(ctx, resetResendWait)
	if sc2, err := c.s.WaitStateChange(wctx); err == nil {
		c.Stop = sc2
	} else if ctx.Err() != nil {
		cancel()
		return fmt.Errorf("attach: %w", ctx.Err())
	}
	cancel()
	if c.Version, err = c.GetVersion(ctx); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	if err := c.readDebuggerData(ctx); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	c.walkModules(ctx)
	// WinDbg releases every breakpoint handle a previous session may have left (they fail on a fresh target).
	for h := uint32(1); h <= AttachBreakpointProbes; h++ {
		if err := c.RestoreBreakPoint(ctx, h); err != nil && !isStatusErr(err) {
			return fmt.Errorf("attach: %w", err)
		}
	}
	// Then it reads KUSER_SHARED_DATA (time, version fields); a failure is not fatal (frame 188 of the capture).
	if _, err := c.ReadVirtual(ctx, KUserSharedDataKernel+0x14, 0x80); err != nil {
		c.log.Debug("attach: KUSER_SHARED_DATA unreadable", "err", err)
	}
	if _, err := c.GetContext(ctx, c.Processor()); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	if _, err := c.ReadKSpecial(ctx, c.Processor()); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	return nil
}

// stopTarget gets the target's stop: break-in for a running target; a target already stopped in the debugger
// ignores break-ins and re-sends its pending stop on RESET instead, so the two alternate (as some clients do
// during their initial handshake, kd-protocol.md §8.3) until one works or ctx ends.
func (c *Client) stopTarget(ctx context.Context) (*StateChange, error) {
	for {
		bctx, cancel := context.WithTimeout(ctx, attachBreakInWait)
		sc, err := c.s.BreakIn(bctx)
		cancel()
		if err == nil {
			return sc, nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrSessionClosed) {
			return nil, err
		}
		c.log.Debug("attach: no stop after break-in, sending RESET", "err", err)
		rctx, cancel := context.WithTimeout(ctx, attachBreakInWait)
		rerr := c.s.Reset(rctx)
		if rerr == nil {
			sc, rerr = c.s.WaitStateChange(rctx)
		}
		cancel()
		if rerr == nil {
			return sc, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

func isStatusErr(err error) bool {
	var se *StatusError
	return errors.As(err, &se)
}

// readDebuggerData reads the list head at DebuggerDataList, follows Flink to the KDBG, reads its header, then the
// rest of the block in one request starting at +0x18, as WinDbg does.
func (c *Client) readDebuggerData(ctx context.Context) error {
	if c.Version.DebuggerDataList == 0 {
		return nil // a boot debugger has none (the shared capture)
	}
	head, err := c.ReadVirtual(ctx, c.Version.DebuggerDataList, 0x10)
	if err != nil {
		return fmt.Errorf("read debugger data list: %w", err)
	}
	flink := binary.LittleEndian.Uint64(head)
	hdr, err := c.ReadVirtual(ctx, flink, kdbgHeaderSize)
	if err != nil {
		return fmt.Errorf("read KDBG header at %#x: %w", flink, err)
	}
	if tag := binary.LittleEndian.Uint32(hdr[0x10:]); tag != 0x4742444B {
		return fmt.Errorf("KDBG at %#x: owner tag %#x, want 'KDBG'", flink, tag)
	}
	size := binary.LittleEndian.Uint32(hdr[0x14:])
	if size <= kdbgHeaderSize || size > kdbgMaxSize {
		return fmt.Errorf("KDBG at %#x: implausible size %#x", flink, size)
	}
	body, err := c.ReadVirtual(ctx, flink+kdbgHeaderSize, int(size)-kdbgHeaderSize)
	if err != nil {
		return fmt.Errorf("read KDBG body at %#x: %w", flink+kdbgHeaderSize, err)
	}
	c.KDBGAddress = flink
	c.KDBG = append(hdr, body...)
	return nil
}

// walkModules reads the loaded-module list the way WinDbg does at attach: the head, each entry (0x88 bytes) and
// its BaseDllName. Failures end the walk quietly; the list is guest data and the debugger copes with less.
func (c *Client) walkModules(ctx context.Context) {
	head := c.Version.PsLoadedModuleList
	if head == 0 {
		return
	}
	b, err := c.ReadVirtual(ctx, head, 0x10)
	if err != nil {
		c.log.Debug("attach: module list head unreadable", "err", err)
		return
	}
	c.ModuleEntries = c.ModuleEntries[:0]
	for link, n := binary.LittleEndian.Uint64(b), 0; link != head && link != 0 && n < attachMaxModules; n++ {
		e, err := c.ReadVirtual(ctx, link, kldrEntryReadSize)
		if err != nil {
			return
		}
		c.ModuleEntries = append(c.ModuleEntries, link)
		if l := binary.LittleEndian.Uint16(e[kldrBaseDllName:]); l > 0 && l <= 0x200 {
			_, _ = c.ReadVirtual(ctx, binary.LittleEndian.Uint64(e[kldrBaseDllName+8:]), int(l))
		}
		link = binary.LittleEndian.Uint64(e)
	}
}

// exchange sends m and returns the response. A stopped kernel that resumes drops requests (a running kernel only
// polls for break-in), so a state change that arrives while a request waits means the request was lost in a
// resume/stop race (for instance a new debugger attaching right after the previous one continued): the new stop
// is recorded and the request re-issued, a bounded number of times.
func (c *Client) exchange(ctx context.Context, m *Manipulate) (*Manipulate, error) {
	for attempt := 0; ; attempt++ {
		c.drainStops()
		type result struct {
			r   *Manipulate
			err error
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan result, 1)
		go func() {
			r, err := c.s.Request(rctx, m)
			done <- result{r, err}
		}()
		stall := time.NewTimer(requestStall)
		var sc *StateChange
		select {
		case res := <-done:
			stall.Stop()
			cancel()
			return res.r, res.err
		case sc = <-c.s.StateChanges():
		case <-stall.C:
			// No answer: the target may have resumed under us (it then ignores requests). A break-in stops it
			// again if so, and is ignored by a target that is merely slow.
		}
		stall.Stop()
		cancel()
		<-done
		if attempt >= maxReissues {
			return nil, fmt.Errorf("%s: no answer; the target kept resuming or stopping anew (%d tries)", APIName(m.APINumber), attempt+1)
		}
		if sc == nil {
			bctx, bcancel := context.WithTimeout(ctx, requestStall)
			sc, _ = c.s.BreakIn(bctx)
			bcancel()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: %w", APIName(m.APINumber), ctx.Err())
			}
		}
		if sc != nil {
			c.Stop = sc
		}
		c.log.Debug("request overtaken by a resume or stop; re-issuing", "api", APIName(m.APINumber))
	}
}

// requestStall is how long a request waits for its answer before the client suspects it was dropped.
const requestStall = 3 * time.Second

// maxReissues bounds how often one request is re-issued after being overtaken by a stop.
const maxReissues = 3

// drainStops records state changes that arrived before a request is sent (they precede it).
func (c *Client) drainStops() {
	for {
		select {
		case sc := <-c.s.StateChanges():
			c.Stop = sc
		default:
			return
		}
	}
}

// request sends m and checks the response's ReturnStatus.
func (c *Client) request(ctx context.Context, m *Manipulate) (*Manipulate, error) {
	r, err := c.exchange(ctx, m)
	if err != nil {
		return nil, err
	}
	if r != nil && r.ReturnStatus != StatusSuccess {
		return r, responseError(m.APINumber, r.ReturnStatus)
	}
	return r, nil
}

// GetVersion asks for DBGKD_GET_VERSION64.
func (c *Client) GetVersion(ctx context.Context) (*GetVersion64, error) {
	r, err := c.request(ctx, &Manipulate{APINumber: APIGetVersion, U: &GetVersion64{}})
	if err != nil {
		return nil, err
	}
	v, ok := r.U.(*GetVersion64)
	if !ok {
		return nil, fmt.Errorf("GetVersion: response union is %T", r.U)
	}
	return v, nil
}

// ReadVirtual reads n bytes at va in the current process context, in requests of at most 3944 bytes. A short
// read returns the bytes read so far with an error.
func (c *Client) ReadVirtual(ctx context.Context, va uint64, n int) ([]byte, error) {
	return c.readMemory(ctx, APIReadVirtualMemory, c.Processor(), va, n, 0)
}

// ReadPhysical reads n bytes of guest-physical memory (default caching), chunked like ReadVirtual.
func (c *Client) ReadPhysical(ctx context.Context, pa uint64, n int) ([]byte, error) {
	return c.readMemory(ctx, APIReadPhysicalMemory, c.Processor(), pa, n, 0)
}

// ReadControlSpace reads AMD64 control space of cpu (0 KPCR, 1 KPRCB, 2 KSPECIAL_REGISTERS, 3 KTHREAD).
func (c *Client) ReadControlSpace(ctx context.Context, cpu uint16, addr uint64, n int) ([]byte, error) {
	return c.readMemory(ctx, APIReadControlSpace, cpu, addr, n, 0)
}

// ReadKSpecial reads cpu's KSPECIAL_REGISTERS through control space 2, asking for the Win10 form and decoding
// whatever form the target returns.
func (c *Client) ReadKSpecial(ctx context.Context, cpu uint16) (*KSpecialRegisters, error) {
	b, err := c.ReadControlSpace(ctx, cpu, ControlSpaceKSpecial, KSpecialSizeWin10)
	if err != nil {
		return nil, err
	}
	k, _, err := DecodeKSpecialRegisters(b)
	if err != nil {
		return nil, fmt.Errorf("ReadControlSpace(KSPECIAL): %w", err)
	}
	return k, nil
}

func (c *Client) readMemory(ctx context.Context, api uint32, cpu uint16, addr uint64, n int, cache uint32) ([]byte, error) {
	if n < 0 {
		return nil, fmt.Errorf("%s: negative length %d", APIName(api), n)
	}
	out := make([]byte, 0, n)
	for len(out) < n {
		chunk := min(n-len(out), MaxManipulateData)
		at := addr + uint64(len(out))
		r, err := c.exchange(ctx, &Manipulate{APINumber: api, Processor: cpu,
			U: &ReadMemory64{TargetBaseAddress: at, TransferCount: uint32(chunk), ActualBytesRead: cache}})
		if err != nil {
			return out, fmt.Errorf("read %#x bytes at %#x: %w", chunk, at, err)
		}
		u, ok := r.U.(*ReadMemory64)
		if !ok {
			return out, fmt.Errorf("%s: response union is %T", APIName(api), r.U)
		}
		got := min(int(u.ActualBytesRead), len(r.Data), chunk)
		out = append(out, r.Data[:got]...)
		if r.ReturnStatus != StatusSuccess || got < chunk {
			return out, fmt.Errorf("read %#x bytes at %#x: %w (%#x bytes read)", chunk, at,
				responseError(api, r.ReturnStatus), got)
		}
	}
	return out, nil
}

// WriteVirtual writes data at va, chunked at 3944 bytes; it returns the bytes written.
func (c *Client) WriteVirtual(ctx context.Context, va uint64, data []byte) (int, error) {
	return c.writeMemory(ctx, APIWriteVirtualMemory, c.Processor(), va, data)
}

// WritePhysical writes guest-physical memory.
func (c *Client) WritePhysical(ctx context.Context, pa uint64, data []byte) (int, error) {
	return c.writeMemory(ctx, APIWritePhysicalMemory, c.Processor(), pa, data)
}

// WriteControlSpace writes cpu's control space (only address 2, KSPECIAL_REGISTERS, is writable).
func (c *Client) WriteControlSpace(ctx context.Context, cpu uint16, addr uint64, data []byte) (int, error) {
	return c.writeMemory(ctx, APIWriteControlSpace, cpu, addr, data)
}

func (c *Client) writeMemory(ctx context.Context, api uint32, cpu uint16, addr uint64, data []byte) (int, error) {
	done := 0
	for done < len(data) {
		chunk := data[done:min(len(data), done+MaxManipulateData)]
		at := addr + uint64(done)
		r, err := c.request(ctx, &Manipulate{APINumber: api, Processor: cpu,
			U: &WriteMemory64{TargetBaseAddress: at, TransferCount: uint32(len(chunk))}, Data: chunk})
		if err != nil {
			return done, fmt.Errorf("write %#x bytes at %#x: %w", len(chunk), at, err)
		}
		u, ok := r.U.(*WriteMemory64)
		if !ok {
			return done, fmt.Errorf("%s: response union is %T", APIName(api), r.U)
		}
		w := min(int(u.ActualBytesWritten), len(chunk))
		done += w
		if w < len(chunk) {
			return done, fmt.Errorf("write %#x bytes at %#x: only %#x written", len(chunk), at, w)
		}
	}
	return done, nil
}

// GetContext returns cpu's CONTEXT: GetContextEx first, as modern WinDbg does, and GetContext when the target
// answers that it does not support it (kd-protocol.md §8.2, frames 190–196).
func (c *Client) GetContext(ctx context.Context, cpu uint16) (*Context, error) {
	if !c.noContextEx {
		r, err := c.request(ctx, &Manipulate{APINumber: APIGetContextEx, Processor: cpu,
			U: &ContextEx{Offset: 0, ByteCount: ContextSize}})
		switch {
		case err == nil:
			if len(r.Data) < ContextSize {
				return nil, fmt.Errorf("GetContextEx: %d bytes, want %d", len(r.Data), ContextSize)
			}
			return DecodeContext(r.Data[:ContextSize])
		case isStatusErr(err):
			c.noContextEx = true
		default:
			return nil, err
		}
	}
	r, err := c.request(ctx, &Manipulate{APINumber: APIGetContext, Processor: cpu, U: &GetContext{}})
	if err != nil {
		return nil, err
	}
	if len(r.Data) < ContextSize {
		return nil, fmt.Errorf("GetContext: %d bytes, want %d", len(r.Data), ContextSize)
	}
	return DecodeContext(r.Data[:ContextSize])
}

// SetContext writes cpu's CONTEXT.
func (c *Client) SetContext(ctx context.Context, cpu uint16, cx *Context) error {
	b, err := cx.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = c.request(ctx, &Manipulate{APINumber: APISetContext, Processor: cpu,
		U: &SetContext{ContextFlags: cx.ContextFlags}, Data: b})
	return err
}

// WriteBreakPoint sets a software breakpoint and returns its handle.
func (c *Client) WriteBreakPoint(ctx context.Context, va uint64) (uint32, error) {
	r, err := c.request(ctx, &Manipulate{APINumber: APIWriteBreakPoint, U: &WriteBreakpoint64{BreakPointAddress: va}})
	if err != nil {
		return 0, err
	}
	u, ok := r.U.(*WriteBreakpoint64)
	if !ok {
		return 0, fmt.Errorf("WriteBreakPoint: response union is %T", r.U)
	}
	return u.BreakPointHandle, nil
}

// RestoreBreakPoint removes the breakpoint with the given handle (a *StatusError for an unknown handle).
func (c *Client) RestoreBreakPoint(ctx context.Context, handle uint32) error {
	_, err := c.request(ctx, &Manipulate{APINumber: APIRestoreBreakPoint, U: &RestoreBreakpoint{BreakPointHandle: handle}})
	return err
}

// ContinueOptions are the DBGKD_CONTINUE2 control-set fields.
type ContinueOptions struct {
	Status    uint32 // default DBG_CONTINUE
	TraceFlag bool   // single-step
	Dr7       uint64 // written to every CPU; default 0x400 (no hardware breakpoints)
}

// Continue2 resumes the target. It returns once the request is acknowledged; the next stop arrives through
// WaitStateChange.
func (c *Client) Continue2(ctx context.Context, o ContinueOptions) error {
	if o.Status == 0 {
		o.Status = DBGContinue
	}
	if o.Dr7 == 0 {
		o.Dr7 = 0x400
	}
	tf := uint32(0)
	if o.TraceFlag {
		tf = 1
	}
	_, err := c.s.Request(ctx, &Manipulate{APINumber: APIContinue2, Processor: c.Processor(),
		U: &Continue2{ContinueStatus: o.Status, TraceFlag: tf, Dr7: o.Dr7, CurrentSymbolStart: 1}})
	return err
}

// Continue resumes with the old DbgKdContinueApi (what WinDbg sends when it detaches).
func (c *Client) Continue(ctx context.Context, status uint32) error {
	if status == 0 {
		status = DBGContinue
	}
	_, err := c.s.Request(ctx, &Manipulate{APINumber: APIContinue, U: &Continue{ContinueStatus: status}})
	return err
}

// WaitStateChange waits for the next stop and records it as the current one.
func (c *Client) WaitStateChange(ctx context.Context) (*StateChange, error) {
	sc, err := c.s.WaitStateChange(ctx)
	if err != nil {
		return nil, err
	}
	c.Stop = sc
	return sc, nil
}

// BreakIn stops a running target and records the stop.
func (c *Client) BreakIn(ctx context.Context) (*StateChange, error) {
	sc, err := c.s.BreakIn(ctx)
	if err != nil {
		return nil, err
	}
	c.Stop = sc
	return sc, nil
}

// SwitchProcessor makes cpu the reporting processor; the target answers with a state change from that CPU.
func (c *Client) SwitchProcessor(ctx context.Context, cpu uint16) (*StateChange, error) {
	if _, err := c.s.Request(ctx, &Manipulate{APINumber: APISwitchProcessor, Processor: cpu, U: &RawUnion{}}); err != nil {
		return nil, err
	}
	return c.WaitStateChange(ctx)
}

// ReadMSR reads a model-specific register on cpu.
func (c *Client) ReadMSR(ctx context.Context, cpu uint16, msr uint32) (uint64, error) {
	r, err := c.request(ctx, &Manipulate{APINumber: APIReadMachineSpecificRegister, Processor: cpu, U: &ReadWriteMSR{Msr: msr}})
	if err != nil {
		return 0, err
	}
	u, ok := r.U.(*ReadWriteMSR)
	if !ok {
		return 0, fmt.Errorf("ReadMSR: response union is %T", r.U)
	}
	return u.Value(), nil
}

// WriteMSR writes a model-specific register on cpu.
func (c *Client) WriteMSR(ctx context.Context, cpu uint16, msr uint32, v uint64) error {
	_, err := c.request(ctx, &Manipulate{APINumber: APIWriteMachineSpecificRegister, Processor: cpu,
		U: &ReadWriteMSR{Msr: msr, DataValueLow: uint32(v), DataValueHigh: uint32(v >> 32)}})
	return err
}
