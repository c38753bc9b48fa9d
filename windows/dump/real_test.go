package dump

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/internal/shareddata"
)

const realTriage = "testdata/dumps/win10-19041-x64-triage.dmp"

// Facts about the shared dump from windows-internals.md §4.4, §7.1 and §9.1.
const (
	realKernBase         = 0xFFFFF8047BA00000
	realKDBG             = 0xFFFFF8047C600B20
	realPsLoadedModules  = 0xFFFFF8047C62A390
	realPsActiveProcHead = 0xFFFFF8047C61E200
)

func openReal(t *testing.T) *File {
	t.Helper()
	d, err := Open(shareddata.Require(t, realTriage))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d
}

func TestRealTriageHeader(t *testing.T) {
	d := openReal(t)
	h := d.Header()
	require.Equal(t, uint32(0xF), h.MajorVersion)
	require.Equal(t, uint32(0x4A61), h.MinorVersion)
	require.Equal(t, uint64(0x1AD000), h.DTB)
	require.Equal(t, uint64(0xFFFFF8047C6FC500), h.PfnDataBase)
	require.Equal(t, uint64(realPsLoadedModules), h.PsLoadedModuleList)
	require.Equal(t, uint64(realPsActiveProcHead), h.PsActiveProcessHead)
	require.Equal(t, uint32(0x8664), h.MachineImageType)
	require.Equal(t, uint32(16), h.NumberProcessors)
	require.Equal(t, uint32(0x1000007E), h.BugCheckCode)
	require.Equal(t, uint64(realKDBG), h.KdDebuggerDataBlock)
	require.Equal(t, TypeTriage, h.DumpType)
	require.False(t, h.PhysicalMemoryValid, "triage dumps leave the descriptor as PAGE fill")
	require.Len(t, h.Context, ContextSize)
	require.Equal(t, int64(1444532), d.Size())
	require.Equal(t, uint32(0xC0000005), uint32(h.BugCheckParameters[0]), "0x7E parameter 1: the exception code")
	// Build 19041 shipped in 2020, so the crash cannot predate 2019.
	require.True(t, h.Time().After(time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)), "SystemTime %#x = %v", h.SystemTime, h.Time())
	require.True(t, h.Time().Before(time.Now()), "SystemTime %#x = %v", h.SystemTime, h.Time())
}

func TestRealTriagePhysicalUnsupported(t *testing.T) {
	d := openReal(t)
	err := d.ReadPhysical(context.Background(), 0x1AD000, make([]byte, 8))
	require.ErrorIs(t, err, ErrTriagePhysical)
	require.False(t, d.HasPhysical())
}

func TestRealTriageKDBG(t *testing.T) {
	d := openReal(t)
	tr, err := d.Triage()
	require.NoError(t, err)
	k := tr.KDBG
	require.Equal(t, uint64(realKDBG), k.VA)
	require.Equal(t, uint32(0x104A8), k.FileOffset)
	require.Len(t, k.Data, 0x380)
	require.Equal(t, "KDBG", string(k.Data[0x10:0x14]))
	require.Equal(t, uint32(0x380), binary.LittleEndian.Uint32(k.Data[0x14:]))
	require.Equal(t, uint64(realKernBase), binary.LittleEndian.Uint64(k.Data[0x18:]))
	require.Equal(t, uint64(realPsLoadedModules), binary.LittleEndian.Uint64(k.Data[0x48:]))
	require.Equal(t, uint64(realPsActiveProcHead), binary.LittleEndian.Uint64(k.Data[0x50:]))

	// The same bytes are readable at the KDBG's VA.
	got := make([]byte, 0x380)
	require.NoError(t, d.ReadVirtual(context.Background(), realKDBG, got))
	require.Equal(t, k.Data, got)
}

func TestRealTriageDrivers(t *testing.T) {
	d := openReal(t)
	tr, err := d.Triage()
	require.NoError(t, err)
	require.Len(t, tr.Drivers, 151)
	nt := tr.Drivers[0]
	require.Equal(t, `\SystemRoot\system32\ntoskrnl.exe`, nt.Name)
	require.Equal(t, uint64(realKernBase), nt.DllBase)
	require.Equal(t, uint32(0x1046000), nt.SizeOfImage)
	require.Equal(t, uint64(0xFFFFF80479440000), tr.Drivers[1].DllBase)
	require.Equal(t, uint32(0x6000), tr.Drivers[1].SizeOfImage)
	require.True(t, strings.HasSuffix(strings.ToLower(tr.Drivers[1].Name), `\hal.dll`), tr.Drivers[1].Name)
	for i, drv := range tr.Drivers {
		require.NotEmpty(t, drv.Name, "driver %d", i)
		require.NotZero(t, drv.DllBase, "driver %d (%s)", i, drv.Name)
		require.NotZero(t, drv.SizeOfImage, "driver %d (%s)", i, drv.Name)
		require.Len(t, drv.Raw, kldrPrefixSize)
	}
	// The 0x7E bugcheck's faulting address (parameter 2) lies inside one of the listed drivers.
	faultAt := d.Header().BugCheckParameters[1]
	var inDriver bool
	for _, drv := range tr.Drivers {
		inDriver = inDriver || (faultAt >= drv.DllBase && faultAt < drv.DllBase+uint64(drv.SizeOfImage))
	}
	require.True(t, inDriver, "fault address %#x in no driver", faultAt)
	// The KLDR copy's TimeDateStamp and CheckSum agree with ntoskrnl's own PE header page.
	page := make([]byte, PageSize)
	require.NoError(t, d.ReadVirtual(context.Background(), realKernBase, page))
	lfanew := binary.LittleEndian.Uint32(page[0x3C:])
	require.Equal(t, binary.LittleEndian.Uint32(page[lfanew+8:]), nt.TimeDateStamp)
	require.Equal(t, binary.LittleEndian.Uint32(page[lfanew+0x18+0x40:]), nt.CheckSum)
}

func TestRealTriageKernelHeaderPage(t *testing.T) {
	d := openReal(t)
	page := make([]byte, PageSize)
	require.NoError(t, d.ReadVirtual(context.Background(), realKernBase, page))
	require.Equal(t, "MZ", string(page[:2]))
	lfanew := binary.LittleEndian.Uint32(page[0x3C:])
	require.Equal(t, uint32(0x110), lfanew)
	require.Equal(t, "PE\x00\x00", string(page[lfanew:lfanew+4]))
	require.Equal(t, uint16(33), binary.LittleEndian.Uint16(page[lfanew+6:]), "NumberOfSections")
	require.Equal(t, uint64(realKernBase), binary.LittleEndian.Uint64(page[lfanew+0x18+0x18:]), "ImageBase")

	// One byte past the header page is not in the dump.
	err := d.ReadVirtual(context.Background(), realKernBase+PageSize-4, make([]byte, 8))
	require.ErrorIs(t, err, ErrNotPresent)
	var np *NotPresentError
	require.True(t, errors.As(err, &np))
	require.Equal(t, uint64(realKernBase+PageSize), np.Addr)
	require.True(t, np.Virtual)
}

func TestRealTriageStructureCopies(t *testing.T) {
	d := openReal(t)
	tr, err := d.Triage()
	require.NoError(t, err)
	ctx := context.Background()

	p := tr.Process
	require.Equal(t, uint32(0xD0B8), p.FileOffset)
	require.Len(t, p.Data, 0xA40, "SizeEProcess from the KDBG")
	require.NotZero(t, p.VA)
	// System: UniqueProcessId 4 at 0x440, ImageFileName at 0x5A8, ActiveProcessLinks.Blink = PsActiveProcessHead.
	require.Equal(t, uint64(4), binary.LittleEndian.Uint64(p.Data[0x440:]))
	require.Equal(t, "System\x00", string(p.Data[0x5A8:0x5AF]))
	require.Equal(t, uint64(realPsActiveProcHead), binary.LittleEndian.Uint64(p.Data[0x450:]))
	got := make([]byte, len(p.Data))
	require.NoError(t, d.ReadVirtual(ctx, p.VA, got))
	require.Equal(t, p.Data, got)

	th := tr.Thread
	require.Equal(t, uint32(0xDAF8), th.FileOffset)
	require.Len(t, th.Data, 0x898, "SizeEThread from the KDBG")
	require.Equal(t, p.VA, binary.LittleEndian.Uint64(th.Data[0xB8:]), "ApcState.Process")
	got = make([]byte, len(th.Data))
	require.NoError(t, d.ReadVirtual(ctx, th.VA, got))
	require.Equal(t, th.Data, got)

	pr := tr.Prcb
	require.Equal(t, uint32(0x21B8), pr.FileOffset)
	require.Len(t, pr.Data, 0xAF00, "SizePrcb from the KDBG")
	require.Equal(t, th.VA, binary.LittleEndian.Uint64(pr.Data[0x8:]), "CurrentThread")
	require.NotZero(t, pr.VA)
	// KiProcessorBlock[0] (through the data blocks) names the KPRCB copy's VA.
	kpb := binary.LittleEndian.Uint64(tr.KDBG.Data[0x218:])
	var ptr [8]byte
	require.NoError(t, d.ReadVirtual(ctx, kpb, ptr[:]))
	require.Equal(t, pr.VA, binary.LittleEndian.Uint64(ptr[:]))
	// KPCR = KPRCB - 0x180 is not in the dump, but the KPRCB is.
	got = make([]byte, len(pr.Data))
	require.NoError(t, d.ReadVirtual(ctx, pr.VA, got))
	require.Equal(t, pr.Data, got)

	cs := tr.CallStack
	require.Equal(t, uint32(0xE390), cs.FileOffset)
	require.Equal(t, tr.Header.TopOfStack, cs.VA)
	require.Len(t, cs.Data, int(tr.Header.SizeOfCallStack))
}

func TestRealTriageDataBlocks(t *testing.T) {
	d := openReal(t)
	tr, err := d.Triage()
	require.NoError(t, err)
	require.Len(t, tr.DataBlocks, 1831)
	var kernHdr *DataBlock
	for i := range tr.DataBlocks {
		if tr.DataBlocks[i].VA == realKernBase {
			kernHdr = &tr.DataBlocks[i]
		}
	}
	require.NotNil(t, kernHdr)
	require.Equal(t, uint32(0xE6474), kernHdr.FileOffset)
	require.Equal(t, uint32(0x1000), kernHdr.Size)

	// Every data block reads back through ReadVirtual with the bytes stored at its file offset, except where
	// a structure copy takes precedence.
	ctx := context.Background()
	raw, err := readAll(d)
	require.NoError(t, err)
	for _, b := range tr.DataBlocks {
		got := make([]byte, b.Size)
		require.NoError(t, d.ReadVirtual(ctx, b.VA, got), "block at VA %#x", b.VA)
		require.Equal(t, raw[b.FileOffset:b.FileOffset+b.Size], got, "block at VA %#x", b.VA)
	}
}

func readAll(d *File) ([]byte, error) {
	b := make([]byte, d.Size())
	return b, readFull(d.r, b, 0)
}

func TestRealTriageContextRegisters(t *testing.T) {
	d := openReal(t)
	h := d.Header()
	tr, err := d.Triage()
	require.NoError(t, err)
	r := h.Registers()
	require.True(t, r.Have.Has(amd64.HaveGPR|amd64.HaveDebug|amd64.HaveFloat), "ContextFlags groups %b", r.Have)
	// KMODE_EXCEPTION_NOT_HANDLED (0x7E/0x1000007E): parameter 2 is the faulting RIP the CONTEXT holds.
	require.Equal(t, h.BugCheckParameters[1], r.RIP)
	// Kernel-mode selectors agree with the KDBG's GdtR0Code / GdtR0Data.
	require.Equal(t, binary.LittleEndian.Uint16(tr.KDBG.Data[0x2F4:]), r.CS)
	require.Equal(t, binary.LittleEndian.Uint16(tr.KDBG.Data[0x2F6:]), r.SS)
	// The stack pointer lies in the saved call stack.
	require.GreaterOrEqual(t, r.RSP, tr.CallStack.VA)
	require.Less(t, r.RSP, tr.CallStack.VA+uint64(len(tr.CallStack.Data)))
	// MxCsr is stored twice (CONTEXT.MxCsr and FltSave.MxCsr); the FXSAVE copy must agree.
	require.Equal(t, binary.LittleEndian.Uint32(h.Context[0x118:]), r.MXCSR)
}
