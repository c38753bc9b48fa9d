package kdproto

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
)

// Server plays the KD target over one session at a time: it turns break-ins and manipulate requests into
// calls on a Target and sends back responses and state changes, following the target-side rules of
// kd-protocol.md §2 and §11. It knows nothing of how the Target does its work.
type Server struct {
	Target Target
	Logger *slog.Logger
}

// stopResult is what the goroutine waiting for the guest to stop hands back.
type stopResult struct {
	sc  *StateChange
	err error
}

// serveState is one Serve call's state, owned by its goroutine.
type serveState struct {
	srv     *Server
	sess    *TargetSession
	log     *slog.Logger
	running bool
	breakin bool // Break already asked for the current run
	cpu     int  // the processor that reported the current stop: the context of virtual memory requests
	stops   chan stopResult
	waitCtx context.Context
	stopW   context.CancelFunc
}

// Serve runs one debugger session until ctx ends or the session ends (the debugger went away), and returns
// why. It starts the session's Run itself. The guest is not stopped by attaching: a break-in stops it. If the
// guest was left stopped by a previous session, its pending state change is reported at once, as a kernel
// waiting in the debugger does when a debugger connects.
func (srv *Server) Serve(ctx context.Context, sess *TargetSession) error {
	lg := srv.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- sess.Run(ctx) }()

	st := &serveState{srv: srv, sess: sess, log: lg, stops: make(chan stopResult, 1)}
	defer st.stopWaiting()
	sc, err := srv.Target.Stopped(ctx)
	if err != nil {
		return fmt.Errorf("kd server: target state: %w", err)
	}
	if sc != nil {
		st.report(ctx, sc)
	} else {
		st.startWaiting(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-runErr:
			// A detaching debugger's last continue may still be queued: it was acknowledged, so honour it.
			st.drainRequests(ctx, true)
			if err == nil {
				err = ErrSessionClosed
			}
			return fmt.Errorf("kd server: session ended: %w", err)
		case <-sess.BreakIns():
			// Requests queued before the break-in come first: a continue still in the queue makes the guest run,
			// and this break-in must then stop it rather than be discarded as a stray byte.
			st.drainRequests(ctx, false)
			if !st.running || st.breakin {
				continue // stray 0x62 while stopped, or one already acted on (kd-protocol.md §1.2)
			}
			st.breakin = true
			lg.Debug("kd server: break-in")
			if err := srv.Target.Break(ctx); err != nil {
				lg.Warn("kd server: break-in failed", "err", err)
				st.breakin = false
			}
		case r := <-st.stops:
			st.running = false
			if r.err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("kd server: wait for the guest to stop: %w", r.err)
			}
			st.report(ctx, r.sc)
		case m := <-sess.Requests():
			if st.running {
				// A running kernel only polls for break-in; requests are acknowledged by the session and dropped.
				lg.Debug("kd server: request while running ignored", "api", APIName(m.APINumber))
				continue
			}
			st.handle(ctx, m)
		}
	}
}

// drainRequests handles the requests already queued, in order, without waiting for more. With onlyResume
// (the session is gone, nothing can be answered) only continues are acted on.
func (st *serveState) drainRequests(ctx context.Context, onlyResume bool) {
	for {
		select {
		case m := <-st.sess.Requests():
			switch {
			case st.running:
				st.log.Debug("kd server: request while running ignored", "api", APIName(m.APINumber))
			case onlyResume && !resumes(m.APINumber):
				st.log.Debug("kd server: request after the session ended dropped", "api", APIName(m.APINumber))
			default:
				st.handle(ctx, m)
			}
		default:
			return
		}
	}
}

// report sends a state change; a debugger that does not acknowledge keeps it pending in the session, to be
// re-sent on its RESET or RESEND.
func (st *serveState) report(ctx context.Context, sc *StateChange) {
	st.cpu = int(sc.Processor)
	if err := st.sess.SendStateChange(ctx, sc); err != nil && ctx.Err() == nil {
		st.log.Warn("kd server: state change not acknowledged (kept pending)", "err", err)
	}
}

func (st *serveState) startWaiting(ctx context.Context) {
	st.running, st.breakin = true, false
	st.stopWaiting() // the previous waiter has delivered its stop
	wctx, cancel := context.WithCancel(ctx)
	st.waitCtx, st.stopW = wctx, cancel
	go func() {
		sc, err := st.srv.Target.WaitStop(wctx)
		select {
		case st.stops <- stopResult{sc, err}:
		case <-wctx.Done():
		}
	}()
}

func (st *serveState) stopWaiting() {
	if st.stopW != nil {
		st.stopW()
	}
}

// handle dispatches one request while the guest is stopped.
func (st *serveState) handle(ctx context.Context, m *Manipulate) {
	t := st.srv.Target
	switch m.APINumber {
	case APIContinue, APIContinue2:
		req := ContinueRequest{Status: DBGContinue}
		switch u := m.U.(type) {
		case *Continue:
			req.Status = u.ContinueStatus
		case *Continue2:
			req = ContinueRequest{Status: u.ContinueStatus, TraceFlag: u.TraceFlag != 0, SetDr7: true, Dr7: u.Dr7,
				SymbolStart: u.CurrentSymbolStart, SymbolEnd: u.CurrentSymbolEnd}
		}
		st.resume(ctx, req)
		return
	case APISwitchProcessor:
		sc, err := t.SwitchProcessor(ctx, int(m.Processor))
		if err != nil {
			st.log.Warn("kd server: switch processor", "cpu", m.Processor, "err", err)
			st.resendPending(ctx)
			return
		}
		st.report(ctx, sc)
		return
	case APIClearAllInternalBreakpoints, APIReboot, APICauseBugCheck:
		st.log.Info("kd server: request accepted without effect", "api", APIName(m.APINumber))
		return
	}
	r := st.answer(ctx, m)
	if len(r.Data) > MaxManipulateData {
		r.Data = r.Data[:MaxManipulateData]
	}
	if err := st.sess.Respond(ctx, r); err != nil && ctx.Err() == nil {
		st.log.Warn("kd server: response not delivered", "api", APIName(m.APINumber), "err", err)
	}
}

// resume continues (or steps) the guest. If the target cannot resume, the stop is reported again so the
// debugger, which waits for a state change after a continue, is not left hanging.
func (st *serveState) resume(ctx context.Context, req ContinueRequest) {
	if err := st.srv.Target.Continue(ctx, req); err != nil {
		st.log.Warn("kd server: continue failed", "err", err)
		st.resendPending(ctx)
		return
	}
	if err := st.sess.ClearPending(ctx); err != nil && ctx.Err() == nil {
		st.log.Warn("kd server: clear pending state change", "err", err)
	}
	st.startWaiting(ctx)
}

func (st *serveState) resendPending(ctx context.Context) {
	sc, err := st.srv.Target.Stopped(ctx)
	if err != nil || sc == nil {
		st.log.Warn("kd server: no stop to report again", "err", err)
		return
	}
	st.report(ctx, sc)
}

// answer builds the response to a request that has one: the request's 56 bytes with outputs, status, data.
func (st *serveState) answer(ctx context.Context, m *Manipulate) *Manipulate {
	t := st.srv.Target
	// WinDbg leaves junk in Processor on APIs that are not per processor (kd-protocol.md §2.1): only
	// context, control space and MSR requests address m.Processor; memory and I/O use the stopped CPU.
	cpu := int(m.Processor)
	cur := st.cpu
	fail := func(err error) *Manipulate {
		st.log.Debug("kd server: request failed", "api", APIName(m.APINumber), "err", err)
		return m.Reply(StatusOf(err))
	}
	switch u := m.U.(type) {
	case *GetVersion64:
		v, err := t.GetVersion(ctx)
		if err != nil {
			return fail(err)
		}
		r := m.Reply(StatusSuccess)
		r.U = v
		return r

	case *ReadMemory64:
		n := min(int(u.TransferCount), MaxManipulateData)
		buf := make([]byte, n)
		var got int
		var err error
		switch m.APINumber {
		case APIReadVirtualMemory:
			got, err = t.ReadVirtual(ctx, cur, u.TargetBaseAddress, buf)
		case APIReadPhysicalMemory:
			got, err = t.ReadPhysical(ctx, u.TargetBaseAddress, buf)
		case APIReadControlSpace:
			got, err = t.ReadControlSpace(ctx, cpu, u.TargetBaseAddress, buf)
			if err == nil {
				n = got // control space is clamped to its natural size
			}
		}
		got = max(0, min(got, n))
		status := StatusSuccess
		if err != nil || got < n {
			status = StatusOf(err)
			if status == StatusSuccess {
				status = StatusUnsuccessful
			}
		}
		r := m.Reply(status)
		ru := r.U.(*ReadMemory64)
		ru.ActualBytesRead = uint32(got)
		r.Data = buf[:got]
		return r

	case *WriteMemory64:
		data := m.Data[:min(int(u.TransferCount), len(m.Data))]
		var done int
		var err error
		switch m.APINumber {
		case APIWriteVirtualMemory:
			done, err = t.WriteVirtual(ctx, cur, u.TargetBaseAddress, data)
		case APIWritePhysicalMemory:
			done, err = t.WritePhysical(ctx, u.TargetBaseAddress, data)
		case APIWriteControlSpace:
			done, err = t.WriteControlSpace(ctx, cpu, u.TargetBaseAddress, data)
		}
		done = max(0, min(done, len(data)))
		status := StatusOf(err)
		if err == nil && done < int(u.TransferCount) {
			status = StatusUnsuccessful
		}
		r := m.Reply(status)
		r.U.(*WriteMemory64).ActualBytesWritten = uint32(done)
		return r

	case *GetContext:
		c, err := t.GetContext(ctx, cpu)
		if err != nil {
			return fail(err)
		}
		b, err := c.MarshalBinary()
		if err != nil {
			return fail(err)
		}
		r := m.Reply(StatusSuccess)
		r.Data = b
		return r

	case *SetContext:
		if len(m.Data) < ContextSize {
			return fail(&ShortError{What: "SetContext CONTEXT", Need: ContextSize, Have: len(m.Data)})
		}
		c, err := DecodeContext(m.Data[:ContextSize])
		if err != nil {
			return fail(err)
		}
		return m.Reply(StatusOf(t.SetContext(ctx, cpu, c)))

	case *ContextEx:
		return st.contextEx(ctx, m, u)

	case *WriteBreakpoint64:
		h, err := t.WriteBreakpoint(ctx, u.BreakPointAddress)
		if err != nil {
			h = 0
		}
		r := m.Reply(StatusOf(err))
		r.U.(*WriteBreakpoint64).BreakPointHandle = h
		return r

	case *RestoreBreakpoint:
		return m.Reply(StatusOf(t.RestoreBreakpoint(ctx, u.BreakPointHandle)))

	case *BreakpointEx:
		return st.breakpointEx(ctx, m, u)

	case *ReadWriteIO64:
		io := IoAccess{Address: u.IoAddress, Size: u.DataSize, Value: u.DataValue}
		return st.ioSpace(ctx, m, cur, io, m.APINumber == APIReadIoSpace)

	case *ReadWriteIOExtended64:
		io := IoAccess{Address: u.IoAddress, Size: u.DataSize, Value: u.DataValue, InterfaceType: u.InterfaceType,
			BusNumber: u.BusNumber, AddressSpace: u.AddressSpace, Extended: true}
		return st.ioSpace(ctx, m, cur, io, m.APINumber == APIReadIoSpaceExtended)

	case *ReadWriteMSR:
		if m.APINumber == APIReadMachineSpecificRegister {
			v, err := t.ReadMSR(ctx, cpu, u.Msr)
			if err != nil {
				return fail(err)
			}
			r := m.Reply(StatusSuccess)
			ru := r.U.(*ReadWriteMSR)
			ru.DataValueLow, ru.DataValueHigh = uint32(v), uint32(v>>32)
			return r
		}
		return m.Reply(StatusOf(t.WriteMSR(ctx, cpu, u.Msr, u.Value())))

	case *SearchMemory:
		pat := m.Data[:min(int(u.PatternLength), len(m.Data))]
		found, err := t.SearchMemory(ctx, cur, u.SearchAddress, u.SearchLength, pat)
		if err != nil {
			return fail(err)
		}
		r := m.Reply(StatusSuccess)
		r.U.(*SearchMemory).SearchAddress = found
		return r

	case *QueryMemory:
		if u.AddressSpace != 0 {
			return fail(NewStatusError(StatusInvalidParameter, fmt.Errorf("query memory: address space %d", u.AddressSpace)))
		}
		space, flags, err := t.QueryMemory(ctx, cur, u.Address)
		if err != nil {
			return fail(err)
		}
		r := m.Reply(StatusSuccess)
		ru := r.U.(*QueryMemory)
		ru.Reserved, ru.AddressSpace, ru.Flags = 0, space, flags
		return r

	case *FillMemory:
		if u.Flags != 1 && u.Flags != 2 {
			return fail(NewStatusError(StatusInvalidParameter, fmt.Errorf("fill memory: flags %#x", u.Flags)))
		}
		pat := m.Data[:min(int(u.PatternLength), len(m.Data))]
		n, err := t.FillMemory(ctx, cur, u.Address, u.Length, u.Flags == 2, pat)
		r := m.Reply(StatusOf(err))
		r.U.(*FillMemory).Length = n
		return r

	case *GetSetBusData:
		bus := BusAccess{BusDataType: u.BusDataType, BusNumber: u.BusNumber, SlotNumber: u.SlotNumber, Offset: u.Offset}
		var n int
		var err error
		var data []byte
		if m.APINumber == APIGetBusData {
			buf := make([]byte, min(int(u.Length), MaxManipulateData))
			n, err = t.GetBusData(ctx, bus, buf)
			n = max(0, min(n, len(buf)))
			data = buf[:n]
		} else {
			in := m.Data[:min(int(u.Length), len(m.Data))]
			n, err = t.SetBusData(ctx, bus, in)
			n = max(0, min(n, len(in)))
		}
		r := m.Reply(StatusOf(err))
		r.U.(*GetSetBusData).Length = uint32(n)
		r.Data = data
		return r
	}
	// Everything else (unknown APIs, special calls, internal breakpoints, page-in, partitions, ...) is
	// "not supported": same ApiNumber, STATUS_UNSUCCESSFUL, no data, and the debugger falls back.
	return m.Reply(StatusUnsuccessful)
}

// contextEx serves GetContextEx/SetContextEx: a window [Offset, Offset+ByteCount) of the CONTEXT.
func (st *serveState) contextEx(ctx context.Context, m *Manipulate, u *ContextEx) *Manipulate {
	t := st.srv.Target
	cpu := int(m.Processor)
	end := uint64(u.Offset) + uint64(u.ByteCount)
	bad := func(err error) *Manipulate {
		r := m.Reply(StatusOf(err))
		r.U.(*ContextEx).BytesCopied = 0
		return r
	}
	if end > ContextSize {
		return bad(NewStatusError(StatusUnsuccessful, fmt.Errorf("context window %#x+%#x beyond %#x", u.Offset, u.ByteCount, ContextSize)))
	}
	c, err := t.GetContext(ctx, cpu)
	if err != nil {
		return bad(err)
	}
	b, err := c.MarshalBinary()
	if err != nil {
		return bad(err)
	}
	if m.APINumber == APIGetContextEx {
		n := min(int(u.ByteCount), MaxManipulateData)
		r := m.Reply(StatusSuccess)
		r.U.(*ContextEx).BytesCopied = uint32(n)
		r.Data = append([]byte(nil), b[u.Offset:int(u.Offset)+n]...)
		return r
	}
	n := min(int(u.ByteCount), len(m.Data))
	copy(b[u.Offset:], m.Data[:n])
	nc, err := DecodeContext(b)
	if err != nil {
		return bad(err)
	}
	if err := t.SetContext(ctx, cpu, nc); err != nil {
		return bad(err)
	}
	r := m.Reply(StatusSuccess)
	r.U.(*ContextEx).BytesCopied = uint32(n)
	return r
}

// breakpointEx serves Write/RestoreBreakPointEx: an array of {u64 address, u32 handle, u32 pad} entries
// (RestoreBreakPointEx also accepts bare u32 handles). The reply carries the array with handles filled in.
func (st *serveState) breakpointEx(ctx context.Context, m *Manipulate, u *BreakpointEx) *Manipulate {
	t := st.srv.Target
	const entry = 16
	count := int(u.BreakPointCount)
	if count > 32 || count < 0 {
		return m.Reply(StatusInvalidParameter)
	}
	var errs []error
	if m.APINumber == APIWriteBreakPointEx {
		if len(m.Data) < count*entry {
			return m.Reply(StatusInvalidParameter)
		}
		out := append([]byte(nil), m.Data[:count*entry]...)
		for i := 0; i < count; i++ {
			e := out[i*entry:]
			h, err := t.WriteBreakpoint(ctx, binary.LittleEndian.Uint64(e))
			if err != nil {
				errs = append(errs, err)
				h = 0
			}
			binary.LittleEndian.PutUint32(e[8:], h)
		}
		r := m.Reply(StatusOf(errors.Join(errs...)))
		r.Data = out
		return r
	}
	size := entry
	if len(m.Data) < count*entry {
		size = 4
	}
	if len(m.Data) < count*size {
		return m.Reply(StatusInvalidParameter)
	}
	for i := 0; i < count; i++ {
		off := i * size
		if size == entry {
			off += 8
		}
		if err := t.RestoreBreakpoint(ctx, binary.LittleEndian.Uint32(m.Data[off:])); err != nil {
			errs = append(errs, err)
		}
	}
	return m.Reply(StatusOf(errors.Join(errs...)))
}

// ioSpace serves the four I/O space APIs.
func (st *serveState) ioSpace(ctx context.Context, m *Manipulate, cpu int, io IoAccess, read bool) *Manipulate {
	t := st.srv.Target
	if !read {
		return m.Reply(StatusOf(t.WriteIoSpace(ctx, cpu, io)))
	}
	v, err := t.ReadIoSpace(ctx, cpu, io)
	r := m.Reply(StatusOf(err))
	if err == nil {
		switch ru := r.U.(type) {
		case *ReadWriteIO64:
			ru.DataValue = v
		case *ReadWriteIOExtended64:
			ru.DataValue = v
		}
	}
	return r
}
