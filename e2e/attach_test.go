package e2e

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
)

// TestAttachEachTransport attaches the way WinDbg does (break-in, RESET, GetVersion, debugger data, context,
// control space) over KD serial on a unix socket and on TCP, and over KDNET in both modes, against the live
// fixture guest, and checks every answer against the manifest.
func TestAttachEachTransport(t *testing.T) {
	forEachTransport(t, func(t *testing.T, attach attachFunc) {
		ctx := testCtx(t, 90*time.Second)
		s := startStub(t, 1)
		d := attach(t, ctx, s)
		checkAttach(t, ctx, s, d)
	})
}

func checkAttach(t *testing.T, ctx context.Context, s *stub, d *debugger) {
	man := s.g.Manifest
	sc := d.breakIn(t, ctx)
	require.Equal(t, kdproto.StateChangeException, sc.NewState)
	require.Equal(t, kdproto.StatusBreakpoint, code(sc))
	require.Equal(t, uint32(1), sc.NumberProcessors)
	require.GreaterOrEqual(t, sc.ProgramCounter, uint64(man.KernelBase))
	require.Less(t, sc.ProgramCounter, uint64(man.KernelBase+man.KernelSize), "stopped inside ntoskrnl")
	require.Equal(t, uint16(kdproto.ReportIncludesSegs|kdproto.ReportStandardCS), sc.ControlReport.ReportFlags)
	require.Equal(t, uint16(16), sc.ControlReport.InstructionCount)
	require.Equal(t, d.read(t, ctx, sc.ProgramCounter, 16), sc.ControlReport.InstructionStream[:], "stream = guest bytes at PC")
	threads := map[uint64]bool{uint64(man.CPUs[0].CurrentThread): true, uint64(man.CPUs[0].IdleThread): true}
	for _, p := range man.Processes {
		for _, th := range p.Threads {
			threads[uint64(th.ETHREAD)] = true
		}
	}
	require.True(t, threads[sc.Thread], "state change Thread %#x is a KTHREAD of the guest", sc.Thread)

	require.NoError(t, d.h.Reset(ctx))
	again := d.wait(t, ctx)
	require.Equal(t, sc.ProgramCounter, again.ProgramCounter, "RESET re-sends the pending state change")

	v := d.request(t, ctx, kdproto.APIGetVersion, nil, nil, 0xFFFF)
	require.Equal(t, kdproto.StatusSuccess, v.ReturnStatus)
	gv := v.U.(*kdproto.GetVersion64)
	require.Equal(t, uint16(man.Build), gv.MinorVersion)
	require.Equal(t, uint16(7), gv.Flags)
	require.Equal(t, uint8(6), gv.ProtocolVersion)
	require.Equal(t, uint8(2), gv.KdSecondaryVersion)
	require.Equal(t, uint8(12), gv.MaxPacketType)
	require.Equal(t, uint8(3), gv.MaxStateChange)
	require.Equal(t, uint8(0x31), gv.MaxManipulate)
	require.Equal(t, uint64(man.KernelBase), gv.KernBase)
	require.Equal(t, uint64(man.Symbols["PsLoadedModuleList"]), gv.PsLoadedModuleList)
	require.Equal(t, uint64(man.Symbols["KdpDebuggerDataListHead"]), gv.DebuggerDataList)

	// WinDbg's sequence: list head → Flink → header → the rest of the block in one read.
	kdbgVA := d.u64(t, ctx, gv.DebuggerDataList)
	require.Equal(t, uint64(man.KDBG.Address), kdbgVA)
	hdr := d.read(t, ctx, kdbgVA, 0x18)
	require.Equal(t, uint32(0x4742444B), binary.LittleEndian.Uint32(hdr[0x10:]), "OwnerTag KDBG in plaintext")
	size := binary.LittleEndian.Uint32(hdr[0x14:])
	require.Equal(t, uint32(man.KDBG.Size), size)
	body := d.read(t, ctx, kdbgVA+0x18, int(size)-0x18)
	require.Equal(t, []byte(man.KDBG.Plaintext), append(hdr, body...), "the whole KDBG reads as its plaintext")
	// A read straddling the block's start also gets plaintext for the overlapping part.
	straddle := d.read(t, ctx, kdbgVA-8, 24)
	require.Equal(t, []byte(man.KDBG.Plaintext[:16]), straddle[8:])
	if man.KDBG.Encoded {
		require.Equal(t, []byte{0}, d.read(t, ctx, uint64(man.KDBG.KdpDataBlockEncoded), 1), "KdpDataBlockEncoded reads 0")
	}
	// Physical reads of the KDBG are overlaid too.
	pa := kdbgPA(t, ctx, s, kdbgVA)
	pr := d.request(t, ctx, kdproto.APIReadPhysicalMemory, &kdproto.ReadMemory64{TargetBaseAddress: pa, TransferCount: 0x18}, nil, 0)
	require.Equal(t, kdproto.StatusSuccess, pr.ReturnStatus)
	require.Equal(t, hdr, pr.Data)

	// Registers: GetContextEx falls back to nothing; the CONTEXT matches the live vCPU.
	c := d.context(t, ctx, 0)
	require.Equal(t, sc.ProgramCounter, c.Rip)
	require.Equal(t, uint16(0x10), c.SegCs)
	require.Equal(t, kdproto.ContextAll, c.ContextFlags)
	ks := d.request(t, ctx, kdproto.APIReadControlSpace, &kdproto.ReadMemory64{TargetBaseAddress: 2, TransferCount: 0xF0}, nil, 0)
	require.Equal(t, kdproto.StatusSuccess, ks.ReturnStatus)
	require.Len(t, ks.Data, 0xF0)
	k, _, err := kdproto.DecodeKSpecialRegisters(ks.Data)
	require.NoError(t, err)
	require.NotZero(t, k.Cr3)
	require.Equal(t, uint64(man.CPUs[0].IDTBase), k.Idtr.Base)
	require.Equal(t, uint64(man.CPUs[0].KPCR), k.MsrGsBase)
	pcr := d.request(t, ctx, kdproto.APIReadControlSpace, &kdproto.ReadMemory64{TargetBaseAddress: 0, TransferCount: 8}, nil, 0)
	require.Equal(t, uint64(man.CPUs[0].KPCR), binary.LittleEndian.Uint64(pcr.Data))
	prcb := d.request(t, ctx, kdproto.APIReadControlSpace, &kdproto.ReadMemory64{TargetBaseAddress: 1, TransferCount: 8}, nil, 0)
	require.Equal(t, uint64(man.CPUs[0].KPRCB), binary.LittleEndian.Uint64(prcb.Data))

	// MSRs QEMU exposes, and the clear status for those it cannot.
	efer := d.request(t, ctx, kdproto.APIReadMachineSpecificRegister, &kdproto.ReadWriteMSR{Msr: 0xC0000080}, nil, 0)
	require.Equal(t, kdproto.StatusSuccess, efer.ReturnStatus)
	require.NotZero(t, efer.U.(*kdproto.ReadWriteMSR).Value()&(1<<10), "EFER.LMA")
	gs := d.request(t, ctx, kdproto.APIReadMachineSpecificRegister, &kdproto.ReadWriteMSR{Msr: 0xC0000101}, nil, 0)
	require.Equal(t, uint64(man.CPUs[0].KPCR), gs.U.(*kdproto.ReadWriteMSR).Value())
	lstar := d.request(t, ctx, kdproto.APIReadMachineSpecificRegister, &kdproto.ReadWriteMSR{Msr: 0xC0000082}, nil, 0)
	require.Equal(t, kdproto.StatusNoSuchDevice, lstar.ReturnStatus)
	// Port I/O through the QEMU monitor: nothing decodes the loop's port, so it reads all-ones.
	io := d.request(t, ctx, kdproto.APIReadIoSpace, &kdproto.ReadWriteIO64{IoAddress: uint64(man.Loop.IOPort), DataSize: 1}, nil, 0)
	require.Equal(t, kdproto.StatusSuccess, io.ReturnStatus)
	require.Equal(t, uint32(0xFF), io.U.(*kdproto.ReadWriteIO64).DataValue)
	mis := d.request(t, ctx, kdproto.APIReadIoSpace, &kdproto.ReadWriteIO64{IoAddress: uint64(man.Loop.IOPort) + 1, DataSize: 2}, nil, 0)
	require.Equal(t, kdproto.StatusDatatypeMisalignment, mis.ReturnStatus)
	// Search and query memory in the kernel image.
	sr := d.request(t, ctx, kdproto.APISearchMemory, &kdproto.SearchMemory{SearchAddress: uint64(man.KernelBase), SearchLength: 0x1000, PatternLength: 2}, []byte("PE"), 0)
	require.Equal(t, kdproto.StatusSuccess, sr.ReturnStatus)
	peAt := sr.U.(*kdproto.SearchMemory).SearchAddress
	require.Equal(t, []byte("PE"), d.read(t, ctx, peAt, 2))
	nf := d.request(t, ctx, kdproto.APISearchMemory, &kdproto.SearchMemory{SearchAddress: uint64(man.KernelBase), SearchLength: 0x40, PatternLength: 8}, []byte("kdstub!!"), 0)
	require.Equal(t, kdproto.StatusNoMoreEntries, nf.ReturnStatus)
	qm := d.request(t, ctx, kdproto.APIQueryMemory, &kdproto.QueryMemory{Address: uint64(man.KernelBase)}, nil, 0)
	require.Equal(t, kdproto.StatusSuccess, qm.ReturnStatus)
	require.Equal(t, uint32(2), qm.U.(*kdproto.QueryMemory).AddressSpace)

	// WinDbg probes the breakpoint table at attach and expects failures.
	for h := uint32(1); h <= 32; h++ {
		r := d.request(t, ctx, kdproto.APIRestoreBreakPoint, &kdproto.RestoreBreakpoint{BreakPointHandle: h}, nil, 0)
		require.Equal(t, kdproto.StatusUnsuccessful, r.ReturnStatus)
	}
	// SetContext echoing the context unchanged, then continue and break in again.
	cb, err := c.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, kdproto.StatusSuccess, d.request(t, ctx, kdproto.APISetContext, &kdproto.SetContext{ContextFlags: c.ContextFlags}, cb, 0).ReturnStatus)
	d.cont(t, ctx, false, 0x400)
	time.Sleep(50 * time.Millisecond)
	sc2 := d.breakIn(t, ctx)
	require.Equal(t, kdproto.StatusBreakpoint, code(sc2))
	d.cont(t, ctx, false, 0x400)
}

// kdbgPA translates the KDBG's VA with the machine (independently of the stub) to check physical overlays.
func kdbgPA(t *testing.T, ctx context.Context, s *stub, va uint64) uint64 {
	t.Helper()
	r, err := s.m.Registers(ctx, 0)
	require.NoError(t, err)
	return translate(t, ctx, s, r.CR3, va)
}
