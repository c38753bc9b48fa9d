package kdtest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/kdstub/kdstub/kdproto"
)

// Fixed facts the MemTarget reports, so a scenario can check them.
const (
	BuildNumber      = 19041
	KernBase         = 0xfffff80412200000
	BreakPC          = KernBase + 0x3f5a90 // where break-ins "stop"
	LoadedModuleList = KernBase + 0xc2a2d0
	DebuggerDataList = KernBase + 0xc1b2c0
	Thread           = 0xffffd00012345080
)

// MemTarget is a minimal debuggee: it serves GetVersion and ReadVirtualMemory from Mem (mapped at Base),
// reports a breakpoint stop on break-in, and resumes on Continue/Continue2. Everything else is answered
// with STATUS_UNSUCCESSFUL, as a real kernel does for unsupported APIs.
type MemTarget struct {
	Mem  []byte
	Base uint64

	Stops   atomic.Int64 // state changes reported
	Serves  atomic.Int64 // requests answered
	running bool
}

// Serve runs the target until ctx ends or the session fails. It starts "running".
func (mt *MemTarget) Serve(ctx context.Context, s *kdproto.TargetSession) error {
	mt.running = true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.Done():
			return s.Err()
		case <-s.BreakIns():
			// Requests acknowledged before the break-in came (a Continue) are handled first, as they were
			// on the wire first; select alone would pick between the two channels at random.
			for drained := false; !drained; {
				select {
				case req := <-s.Requests():
					if err := mt.answer(ctx, s, req); err != nil && !isStop(ctx, err) {
						return err
					}
				default:
					drained = true
				}
			}
			if !mt.running {
				continue // a stray 0x62 while stopped is ignored (kd-protocol.md §1.2)
			}
			mt.running = false
			if err := s.SendStateChange(ctx, mt.breakState()); err != nil && !isStop(ctx, err) {
				return fmt.Errorf("report break-in: %w", err)
			}
			mt.Stops.Add(1)
		case req := <-s.Requests():
			if err := mt.answer(ctx, s, req); err != nil && !isStop(ctx, err) {
				return err
			}
		}
	}
}

func isStop(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, ctx.Err())
}

func (mt *MemTarget) breakState() *kdproto.StateChange {
	sc := &kdproto.StateChange{
		NewState: kdproto.StateChangeException, ProcessorLevel: 6, NumberProcessors: 1,
		Thread: Thread, ProgramCounter: BreakPC,
		U: &kdproto.Exception64{ExceptionCode: kdproto.StatusBreakpoint, ExceptionAddress: BreakPC,
			NumberParameters: 1, FirstChance: 1},
		ControlReport: kdproto.ControlReportAMD64{Dr6: 0xFFFF0FF0, Dr7: 0x400, EFlags: 0x202, InstructionCount: 16,
			ReportFlags: kdproto.ReportIncludesSegs | kdproto.ReportStandardCS, SegCs: 0x10, SegDs: 0x2b, SegEs: 0x2b, SegFs: 0x53},
	}
	sc.ControlReport.InstructionStream[0], sc.ControlReport.InstructionStream[1] = 0xcc, 0xc3
	return sc
}

func (mt *MemTarget) answer(ctx context.Context, s *kdproto.TargetSession, req *kdproto.Manipulate) error {
	mt.Serves.Add(1)
	switch req.APINumber {
	case kdproto.APIContinue, kdproto.APIContinue2:
		mt.running = true
		return s.ClearPending(ctx)
	case kdproto.APIGetVersion:
		r := req.Reply(kdproto.StatusSuccess)
		r.U = kdproto.DefaultGetVersion64(BuildNumber, KernBase, LoadedModuleList, DebuggerDataList)
		return s.Respond(ctx, r)
	case kdproto.APIReadVirtualMemory:
		u := req.U.(*kdproto.ReadMemory64)
		r := req.Reply(kdproto.StatusSuccess)
		ru := r.U.(*kdproto.ReadMemory64)
		n := min(int(u.TransferCount), kdproto.MaxManipulateData)
		off := u.TargetBaseAddress - mt.Base
		if u.TargetBaseAddress < mt.Base || off >= uint64(len(mt.Mem)) {
			r.ReturnStatus, ru.ActualBytesRead = kdproto.StatusUnsuccessful, 0
			return s.Respond(ctx, r)
		}
		end := min(off+uint64(n), uint64(len(mt.Mem)))
		r.Data = append([]byte(nil), mt.Mem[off:end]...)
		ru.ActualBytesRead = uint32(len(r.Data))
		if len(r.Data) < int(u.TransferCount) {
			r.ReturnStatus = kdproto.StatusUnsuccessful
		}
		return s.Respond(ctx, r)
	}
	if kdproto.NoReply(req.APINumber) {
		return nil
	}
	return s.Respond(ctx, req.Reply(kdproto.StatusUnsuccessful))
}
