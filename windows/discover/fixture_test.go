package discover

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/windows/machine"
	"github.com/kdstub/kdstub/windows/objects"
	"github.com/kdstub/kdstub/windows/pe"
	"github.com/stretchr/testify/require"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func buildGuest(t testing.TB, opt winguest.Options) (*winguest.Guest, *machine.RawImage) {
	t.Helper()
	opt.Out = t.TempDir()
	opt.NoDisk = true
	g, err := winguest.Build(context.Background(), opt)
	require.NoError(t, err)
	img, err := machine.OpenRawImage(g.RAMImage)
	require.NoError(t, err)
	t.Cleanup(func() { img.Close() })
	return g, img
}

// checkAgainstManifest asserts that every fact of the manifest was found.
func checkAgainstManifest(t *testing.T, k *Kernel, m *winguest.Manifest) {
	t.Helper()
	h := func(v winguest.Hex) uint64 { return uint64(v) }
	require.Equal(t, h(m.KernelBase), k.Base, "kernel base")
	require.EqualValues(t, h(m.KernelSize), k.Size, "kernel size")
	require.Equal(t, h(m.KernelCR3), k.DTB, "kernel DTB")
	require.EqualValues(t, m.Build, k.Build, "build")
	require.Equal(t, h(m.Symbols["KdVersionBlock"]), k.KdVersionBlock, "KdVersionBlock")
	require.Equal(t, h(m.KDBG.Address), k.KDBG, "KDBG address")
	require.Equal(t, m.KDBG.Encoded, k.KDBGEncoded, "KDBG encoded")
	require.Equal(t, hex.EncodeToString(m.KDBG.Plaintext), hex.EncodeToString(k.KDBGPlaintext), "KDBG plaintext")
	require.Equal(t, h(m.Symbols["PsLoadedModuleList"]), k.PsLoadedModuleList)
	require.Equal(t, h(m.Symbols["PsActiveProcessHead"]), k.PsActiveProcessHead)
	require.Equal(t, h(m.Symbols["KiProcessorBlock"]), k.KiProcessorBlock)
	require.Equal(t, h(m.Symbols["PsNtosImageBase"]), k.PsNtosImageBase)
	if va, ok := m.Symbols["KdCopyDataBlock"]; ok && k.KdpDataBlockEncoded != 0 {
		_ = va
		require.Equal(t, h(m.KDBG.KdpDataBlockEncoded), k.KdpDataBlockEncoded)
		require.Equal(t, h(m.Symbols["KiWaitNever"]), k.KiWaitNever)
		require.Equal(t, h(m.Symbols["KiWaitAlways"]), k.KiWaitAlways)
	}
	require.Len(t, k.CPUs, len(m.CPUs), "CPU count")
	for i, c := range m.CPUs {
		require.Equal(t, h(c.KPCR), k.CPUs[i].KPCR, "cpu %d KPCR", i)
		require.Equal(t, h(c.KPRCB), k.CPUs[i].KPRCB, "cpu %d KPRCB", i)
		require.Equal(t, h(c.CurrentThread), k.CPUs[i].CurrentThread, "cpu %d current thread", i)
	}
	require.NotNil(t, k.Offsets)

	procs, err := objects.Processes(context.Background(), k.Space, k.PsActiveProcessHead, k.Offsets)
	require.NoError(t, err)
	require.Len(t, procs, len(m.Processes))
	for i, want := range m.Processes {
		got := procs[i]
		require.Equal(t, want.PID, got.PID, "process %d pid", i)
		require.Equal(t, want.PPID, got.PPID, "process %d ppid", i)
		require.Equal(t, want.Name, got.Name)
		require.Equal(t, h(want.EPROCESS), got.EPROCESS)
		require.Equal(t, h(want.DTB), got.DTB)
		require.Equal(t, h(want.PEB), got.PEB, "process %s PEB", want.Name)
		threads, err := objects.Threads(context.Background(), k.Space, got.EPROCESS, k.Offsets)
		require.NoError(t, err)
		require.Len(t, threads, len(want.Threads), "process %s threads", want.Name)
		for j, wt := range want.Threads {
			require.Equal(t, h(wt.ETHREAD), threads[j].KTHREAD, "thread %d of %s", j, want.Name)
			require.Equal(t, wt.TID, threads[j].TID, "tid of thread %d of %s", j, want.Name)
			require.Equal(t, h(wt.TEB), threads[j].TEB)
		}
		if len(want.Modules) > 0 {
			mods, err := objects.UserModules(context.Background(), k.Paging.WithDTB(got.DTB), got.PEB, got.Wow64PEB)
			require.NoError(t, err, "modules of %s", want.Name)
			require.Len(t, mods, len(want.Modules))
			for j, wm := range want.Modules {
				require.Equal(t, wm.Name, mods[j].Name)
				require.Equal(t, wm.Path, mods[j].FullName)
				require.Equal(t, h(wm.Base), mods[j].Base)
				require.EqualValues(t, h(wm.Size), mods[j].Size)
			}
		}
	}
	mods, err := objects.KernelModules(context.Background(), k.Space, k.PsLoadedModuleList)
	require.NoError(t, err)
	require.Len(t, mods, len(m.KernelModules))
	for i, wm := range m.KernelModules {
		require.Equal(t, wm.Name, mods[i].Name)
		require.Equal(t, wm.FullPath, mods[i].FullName)
		require.Equal(t, h(wm.Base), mods[i].Base)
		require.EqualValues(t, h(wm.Size), mods[i].Size)
		require.Equal(t, wm.TimeDateStamp, mods[i].TimeDateStamp)
		require.Equal(t, h(wm.Entry), mods[i].Entry)
		im, err := pe.Open(context.Background(), k.Space, mods[i].Base)
		require.NoError(t, err, "module %s header", wm.Name)
		cv, err := im.CodeView(context.Background())
		require.NoError(t, err, "module %s RSDS", wm.Name)
		require.Equal(t, wm.PDBName, cv.PDBName())
		require.Equal(t, strings.ToUpper(wm.PDBGUID), fmt.Sprintf("%08X%04X%04X%X", cv.Data1, cv.Data2, cv.Data3, cv.Data4[:]))
		require.Equal(t, wm.PDBAge, cv.Age)
	}
	require.Equal(t, k.PDB.SymbolKey(), fmt.Sprintf("%s/%s%X/%s", m.KernelModules[0].PDBName, strings.ToUpper(m.KernelModules[0].PDBGUID), m.KernelModules[0].PDBAge, m.KernelModules[0].PDBName))
	sd, err := objects.ReadSharedData(context.Background(), k.Space, objects.KUserSharedData)
	require.NoError(t, err)
	require.EqualValues(t, m.Build, sd.NtBuildNumber&0xFFFF)
}

func TestFixtureDiscoveryFromCPUs(t *testing.T) {
	cases := []winguest.Options{
		{Build: 19041, Seed: 1, CPUs: 1},
		{Build: 19041, Seed: 2, CPUs: 4, KDBG: "plain"},
		{Build: 22000, Seed: 3, CPUs: 2},
		{Build: 18362, Seed: 4, CPUs: 3, KDBG: "plain"},
		{Build: 17763, Seed: 5, CPUs: 2, Processes: 3},
	}
	for _, opt := range cases {
		t.Run(fmt.Sprintf("%d-seed%d-cpus%d-%s", opt.Build, opt.Seed, opt.CPUs, opt.KDBG), func(t *testing.T) {
			g, img := buildGuest(t, opt)
			k, err := FromCPUs(context.Background(), testLogger(t), img, machine.StaticCPUs(g.CPUs))
			require.NoError(t, err)
			t.Logf("methods: %v", k.Methods)
			checkAgainstManifest(t, k, g.Manifest)
		})
	}
}

func TestFixtureDiscoveryFromPhysicalOnly(t *testing.T) {
	for _, opt := range []winguest.Options{
		{Build: 19041, Seed: 11, CPUs: 2},
		{Build: 22000, Seed: 12, CPUs: 1, KDBG: "plain"},
		{Build: 17763, Seed: 13, CPUs: 4},
	} {
		t.Run(fmt.Sprintf("%d-seed%d", opt.Build, opt.Seed), func(t *testing.T) {
			g, img := buildGuest(t, opt)
			var last uint64
			k, err := FromPhysical(context.Background(), testLogger(t), img, img.Size(), func(done, total uint64) {
				require.GreaterOrEqual(t, done, last)
				require.LessOrEqual(t, done, total)
				last = done
			})
			require.NoError(t, err)
			require.Positive(t, last)
			checkAgainstManifest(t, k, g.Manifest)
		})
	}
}

// TestFixtureDiscoveryUserModeCPU puts every CPU in user mode the way swapgs leaves it (GS = TEB, KernelGSBase =
// KPCR) with a process CR3, and removes IDTR from the register set so KPCR.IdtBase must be used.
func TestFixtureDiscoveryUserModeCPU(t *testing.T) {
	g, img := buildGuest(t, winguest.Options{Build: 19041, Seed: 21, CPUs: 2})
	cpus := append([]amd64Registers(nil), g.CPUs...)
	for i := range cpus {
		cpus[i].CS = 0x33
		cpus[i].GSBase, cpus[i].KernelGSBase = cpus[i].KernelGSBase, cpus[i].GSBase
		cpus[i].CR3 = uint64(g.Manifest.Processes[len(g.Manifest.Processes)-1].DTB)
		cpus[i].IDTRBase = 0
	}
	k, err := FromCPUs(context.Background(), testLogger(t), img, machine.StaticCPUs(cpus))
	require.NoError(t, err)
	require.Contains(t, k.Methods["KPCR"], "KernelGSBase")
	require.Contains(t, k.Methods["Base"], "KPCR.IdtBase")
	require.Equal(t, uint64(g.Manifest.KernelBase), k.Base)
	require.Equal(t, uint64(g.Manifest.KDBG.Address), k.KDBG)
}

type amd64Registers = amd64.Registers
