package objects

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/isf"
	"github.com/kdstub/kdstub/internal/shareddata"
	"github.com/kdstub/kdstub/windows/dump"
	"github.com/kdstub/kdstub/windows/kdbg"
	"github.com/kdstub/kdstub/windows/pe"
)

type triageFixture struct {
	file *dump.File
	tri  *dump.Triage
	kdbg kdbg.Block
	isf  *isf.Table
}

func openTriage(t *testing.T, withISF bool) triageFixture {
	t.Helper()
	d, err := dump.Open(shareddata.Require(t, "testdata/dumps/win10-19041-x64-triage.dmp"))
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	tri, err := d.Triage()
	require.NoError(t, err)
	require.True(t, tri.KDBG.Present())
	require.True(t, tri.Process.Present())
	f := triageFixture{file: d, tri: tri, kdbg: kdbg.Block(tri.KDBG.Data)}
	if withISF {
		f.isf, err = isf.Load(shareddata.Require(t, "testdata/symbols/ntkrnlmp-10.0.19041.3570-606FF669409B00F7FC8C61A9C1670129-1.json.xz"))
		require.NoError(t, err)
	}
	return f
}

func (f triageFixture) off(t *testing.T, path string) uint32 {
	t.Helper()
	v, err := f.isf.Offset(path)
	require.NoError(t, err, path)
	return v
}

// TestTriageAgreesWithISF loads the 19041 ISF once (it is slow to decompress) for both agreement checks.
func TestTriageAgreesWithISF(t *testing.T) {
	f := openTriage(t, true)
	t.Run("KDBG", func(t *testing.T) { checkTriageKDBG(t, f) })
	t.Run("SystemProcessOffsets", func(t *testing.T) { checkTriageOffsets(t, f) })
}

// checkTriageKDBG checks every KDBG field we use against the dump header (globals of this exact kernel) and the
// 19041 ISF (structure offsets; its global RVAs belong to another revision).
func checkTriageKDBG(t *testing.T, f triageFixture) {
	h := f.file.Header()
	b := f.kdbg
	require.EqualValues(t, kdbg.Tag, b.Tag())
	require.EqualValues(t, 0x380, b.Size())
	require.NoError(t, kdbg.Validate(b[:b.Size()], b.KernBase()))
	require.Equal(t, h.PsLoadedModuleList, b.PsLoadedModuleList())
	require.Equal(t, h.PsActiveProcessHead, b.PsActiveProcessHead())
	require.Equal(t, h.PfnDataBase, b.Must64(kdbg.OffMmPfnDatabase))
	rva, ok := f.isf.Symbol("KdDebuggerDataBlock")
	require.True(t, ok)
	require.Equal(t, h.KdDebuggerDataBlock-b.KernBase(), rva, "KDBG RVA is the same in both 19041 revisions")

	for _, c := range []struct {
		kdbgOff int
		isf     string
	}{
		{kdbg.OffOffsetKThreadNextProcessor, "_KTHREAD.NextProcessor"},
		{kdbg.OffOffsetKThreadTeb, "_KTHREAD.Teb"},
		{kdbg.OffOffsetKThreadKernelStack, "_KTHREAD.KernelStack"},
		{kdbg.OffOffsetKThreadInitialStack, "_KTHREAD.InitialStack"},
		{kdbg.OffOffsetKThreadApcProcess, "_KTHREAD.ApcState.Process"},
		{kdbg.OffOffsetKThreadState, "_KTHREAD.State"},
		{kdbg.OffOffsetEprocessPeb, "_EPROCESS.Peb"},
		{kdbg.OffOffsetEprocessParentCID, "_EPROCESS.InheritedFromUniqueProcessId"},
		{kdbg.OffOffsetEprocessDirectoryTableBase, "_KPROCESS.DirectoryTableBase"},
		{kdbg.OffOffsetPrcbCurrentThread, "_KPRCB.CurrentThread"},
		{kdbg.OffOffsetPrcbNumber, "_KPRCB.Number"},
		{kdbg.OffOffsetPcrSelfPcr, "_KPCR.Self"},
		{kdbg.OffOffsetPcrCurrentPrcb, "_KPCR.CurrentPrcb"},
		{kdbg.OffOffsetPcrContainedPrcb, "_KPCR.Prcb"},
		{kdbg.OffOffsetPrcbContext, "_KPRCB.Context"},
		{kdbg.OffOffsetPrcbProcStateSpecialReg, "_KPRCB.ProcessorState"},
		{kdbg.OffOffsetKThreadStackLimit, "_KTHREAD.StackLimit"},
		{kdbg.OffOffsetKThreadStackBase, "_KTHREAD.StackBase"},
	} {
		require.EqualValues(t, f.off(t, c.isf), b.Must16(c.kdbgOff), "KDBG %#x vs %s", c.kdbgOff, c.isf)
	}
	for _, c := range []struct {
		kdbgOff int
		typ     string
	}{
		{kdbg.OffSizeEProcess, "_EPROCESS"}, {kdbg.OffSizePrcb, "_KPRCB"}, {kdbg.OffSizeEThread, "_ETHREAD"}, {kdbg.OffSizePcr, "_KPCR"},
	} {
		size, err := f.isf.Size(c.typ)
		require.NoError(t, err)
		require.EqualValues(t, size, b.Must16(c.kdbgOff), "size of %s", c.typ)
	}
}

// checkTriageOffsets runs offset detection on the dump's System EPROCESS copy.
func checkTriageOffsets(t *testing.T, f triageFixture) {
	ctx := context.Background()
	b := f.kdbg
	o, err := DetectOffsets(ctx, Probe{
		Buf: f.tri.Process.Data, VA: f.tri.Process.VA, KernelDTB: f.file.Header().DTB,
		PsActiveProcessHead: b.PsActiveProcessHead(), KDBG: b, Build: 19041, Mem: f.file,
	})
	require.NoError(t, err)
	for _, c := range []struct {
		got  uint32
		path string
	}{
		{o.DirectoryTableBase, "_KPROCESS.DirectoryTableBase"},
		{o.KProcessThreadListHead, "_KPROCESS.ThreadListHead"},
		{o.UniqueProcessID, "_EPROCESS.UniqueProcessId"},
		{o.ActiveProcessLinks, "_EPROCESS.ActiveProcessLinks"},
		{o.ImageFileName, "_EPROCESS.ImageFileName"},
		{o.Peb, "_EPROCESS.Peb"},
		{o.ParentPID, "_EPROCESS.InheritedFromUniqueProcessId"},
		{o.CreateTime, "_EPROCESS.CreateTime"},
		{o.UserDirectoryTableBase, "_KPROCESS.UserDirectoryTableBase"},
		{o.Wow64Process, "_EPROCESS.WoW64Process"},
		{o.KThreadTeb, "_KTHREAD.Teb"},
		{o.KThreadState, "_KTHREAD.State"},
		{o.KThreadApcProcess, "_KTHREAD.ApcState.Process"},
		{o.KThreadNextProcessor, "_KTHREAD.NextProcessor"},
		{o.EThreadCid, "_ETHREAD.Cid"},
		{o.PcrPrcb, "_KPCR.Prcb"},
		{o.PrcbCurrentThread, "_KPRCB.CurrentThread"},
		{o.PrcbNumber, "_KPRCB.Number"},
	} {
		require.Equal(t, f.off(t, c.path), c.got, "%s (method %v)", c.path, o.Methods)
	}
	// The scan-only path (no KDBG, no accessor code) must find the same identity fields.
	bare, err := DetectOffsets(ctx, Probe{Buf: f.tri.Process.Data, VA: f.tri.Process.VA, PsActiveProcessHead: b.PsActiveProcessHead()})
	require.NoError(t, err)
	require.Equal(t, o.UniqueProcessID, bare.UniqueProcessID)
	require.Equal(t, o.ImageFileName, bare.ImageFileName)
	require.Contains(t, bare.Methods["uniqueProcessId"], "scan")

	p, err := ReadProcess(ctx, flatBlock{f.tri.Process.VA, f.tri.Process.Data}, f.tri.Process.VA, o)
	require.NoError(t, err)
	require.EqualValues(t, 4, p.PID)
	require.Equal(t, "System", p.Name)
	require.Zero(t, p.PPID)
	require.Zero(t, p.PEB)
	require.Equal(t, f.file.Header().DTB, p.DTB)
	require.False(t, p.CreateTime.IsZero())
}

// flatBlock is a VirtualMemory over one VA-tagged block.
type flatBlock struct {
	va   uint64
	data []byte
}

func (b flatBlock) ReadVirtual(_ context.Context, va uint64, buf []byte) error {
	if va < b.va || va-b.va+uint64(len(buf)) > uint64(len(b.data)) {
		return ErrTooLong
	}
	copy(buf, b.data[va-b.va:])
	return nil
}

// TestTriageKernelHeaderThroughDumpVirtualMemory opens the ntoskrnl header page the dump holds through the
// in-memory PE view and checks it against the driver list (windows-internals §2.5).
func TestTriageKernelHeaderThroughDumpVirtualMemory(t *testing.T) {
	f := openTriage(t, false)
	require.NotEmpty(t, f.tri.Drivers)
	nt := f.tri.Drivers[0]
	require.Equal(t, `\SystemRoot\system32\ntoskrnl.exe`, nt.Name)
	require.Equal(t, f.kdbg.KernBase(), nt.DllBase)
	im, err := pe.Open(context.Background(), f.file, nt.DllBase)
	require.NoError(t, err)
	require.Equal(t, nt.DllBase, im.ImageBase, "the loader writes the real base into the in-memory header")
	require.Equal(t, nt.SizeOfImage, im.SizeOfImage)
	require.Equal(t, nt.TimeDateStamp, im.TimeDateStamp)
	require.EqualValues(t, pe.MachineAMD64, im.Machine)
	require.Len(t, im.Sections, 33)
	data, ok := im.Section(".data")
	require.True(t, ok)
	require.True(t, data.Contains(uint32(f.file.Header().KdDebuggerDataBlock-nt.DllBase)), "the KDBG lies in .data")
	text, ok := im.Section("KVASCODE")
	require.True(t, ok)
	require.NotZero(t, text.Characteristics&pe.SectionExecute)
}
