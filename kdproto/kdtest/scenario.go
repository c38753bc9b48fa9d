package kdtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/kdstub/kdstub/kdproto"
)

// Scenario is the scripted host side of an attach: RESET, break-in, GetVersion, Reads random reads checked
// against the target's memory, Continue2, break-in again, Continue. It returns the first mismatch or error.
func Scenario(ctx context.Context, h *kdproto.HostSession, mem []byte, base uint64, reads int, seed uint64) error {
	if err := h.Reset(ctx); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	if err := checkBreak(ctx, h); err != nil {
		return err
	}
	v, err := request(ctx, h, kdproto.APIGetVersion, nil)
	if err != nil {
		return err
	}
	gv := v.U.(*kdproto.GetVersion64)
	if v.ReturnStatus != kdproto.StatusSuccess || gv.MinorVersion != BuildNumber || gv.KernBase != KernBase ||
		gv.MachineType != kdproto.MachineAMD64 || gv.DebuggerDataList != DebuggerDataList {
		return fmt.Errorf("GetVersion: unexpected answer %+v status %#x", gv, v.ReturnStatus)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range reads {
		off := rng.Uint64N(uint64(len(mem)))
		n := uint32(1 + rng.UintN(uint(kdproto.MaxManipulateData)))
		if i%7 == 0 {
			n = uint32(kdproto.MaxManipulateData) + 100 // must be clamped
		}
		r, err := request(ctx, h, kdproto.APIReadVirtualMemory, &kdproto.ReadMemory64{TargetBaseAddress: base + off, TransferCount: n})
		if err != nil {
			return fmt.Errorf("read %d: %w", i, err)
		}
		want := mem[off:min(off+uint64(min(n, uint32(kdproto.MaxManipulateData))), uint64(len(mem)))]
		got := r.U.(*kdproto.ReadMemory64)
		if !bytes.Equal(r.Data, want) || got.ActualBytesRead != uint32(len(want)) || got.TargetBaseAddress != base+off {
			return fmt.Errorf("read %d at +%#x len %#x: got %d bytes (actual %d), want %d", i, off, n, len(r.Data), got.ActualBytesRead, len(want))
		}
	}
	if _, err := request(ctx, h, kdproto.APIContinue2, &kdproto.Continue2{ContinueStatus: kdproto.DBGContinue, Dr7: 0x400, CurrentSymbolStart: 1}); err != nil {
		return err
	}
	if err := checkBreak(ctx, h); err != nil {
		return fmt.Errorf("second break-in: %w", err)
	}
	// An unsupported API is answered with STATUS_UNSUCCESSFUL.
	r, err := request(ctx, h, kdproto.APIQuerySpecialCalls, nil)
	if err != nil {
		return err
	}
	if r.ReturnStatus != kdproto.StatusUnsuccessful {
		return fmt.Errorf("QuerySpecialCalls: status %#x, want STATUS_UNSUCCESSFUL", r.ReturnStatus)
	}
	if _, err := request(ctx, h, kdproto.APIContinue, &kdproto.Continue{ContinueStatus: kdproto.DBGContinue}); err != nil {
		return err
	}
	return nil
}

func request(ctx context.Context, h *kdproto.HostSession, api uint32, u kdproto.ManipulateUnion) (*kdproto.Manipulate, error) {
	m, err := kdproto.NewManipulate(api, u, nil)
	if err != nil {
		return nil, err
	}
	m.ReturnStatus = kdproto.StatusPending // WinDbg's junk
	return h.Request(ctx, m)
}

func checkBreak(ctx context.Context, h *kdproto.HostSession) error {
	sc, err := h.BreakIn(ctx)
	if err != nil {
		return fmt.Errorf("break in: %w", err)
	}
	ex, ok := sc.U.(*kdproto.Exception64)
	if sc.NewState != kdproto.StateChangeException || !ok || ex.ExceptionCode != kdproto.StatusBreakpoint ||
		sc.ProgramCounter != BreakPC || sc.Thread != Thread || sc.ControlReport.InstructionStream[0] != 0xcc {
		return fmt.Errorf("break in: unexpected state change %+v", sc)
	}
	return nil
}
