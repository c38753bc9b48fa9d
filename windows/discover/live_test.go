package discover

import (
	"context"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/qemuqmp/qemutest"
)

// TestLiveQEMUDiscovery boots the fixture guest in real QEMU (TCG), lets it reach its main loop, and runs
// discovery through the qemuqmp Machine (gdbstub registers, shared-file RAM).
func TestLiveQEMUDiscovery(t *testing.T) {
	g, _ := buildGuest(t, winguest.Options{Build: 19041, Seed: 31, CPUs: 2})
	q := qemutest.Start(t, qemutest.Options{
		SMP: len(g.CPUs), MemoryMB: int(g.RAMSize >> 20), SharedRAM: true, Kernel: g.ELF, Running: true,
	})
	m := q.Connect(t, qemuqmp.Config{Logger: testLogger(t)})
	// Generous: TCG on a loaded 2-core CI machine is slow, and each QMP stop is a round trip through QEMU.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wait := 500 * time.Millisecond

	// Wait until every CPU runs kernel code (the boot stub has switched to the fixture's long-mode kernel).
	for {
		if m.Running() {
			require.NoError(t, m.Stop(ctx))
		}
		ready := true
		for i := 0; i < m.CPUCount(); i++ {
			r, err := m.Registers(ctx, i)
			require.NoError(t, err)
			if r.RIP>>63 == 0 || r.GSBase == 0 {
				ready = false
			}
		}
		if ready {
			break
		}
		require.NoError(t, ctx.Err(), "guest never reached its kernel loop\n%s", q.Stderr())
		require.NoError(t, m.Continue(ctx))
		time.Sleep(wait)
		wait = min(2*wait, 8*time.Second)
	}
	k, err := FromCPUs(ctx, testLogger(t), m, m)
	require.NoError(t, err)
	mf := g.Manifest
	require.Equal(t, uint64(mf.KernelBase), k.Base)
	require.Equal(t, uint64(mf.KernelCR3), k.DTB)
	require.Equal(t, uint64(mf.KDBG.Address), k.KDBG)
	require.Equal(t, hex.EncodeToString(mf.KDBG.Plaintext), hex.EncodeToString(k.KDBGPlaintext))
	require.Equal(t, uint64(mf.Symbols["PsActiveProcessHead"]), k.PsActiveProcessHead)
	require.Len(t, k.CPUs, len(mf.CPUs))
	for i, c := range mf.CPUs {
		require.Equal(t, uint64(c.KPCR), k.CPUs[i].KPCR)
	}
}
