package qemuqmp_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/qemuqmp/qemutest"
)

func TestStartWithExplicitSocketsAndWait(t *testing.T) {
	g := qemutest.TinyGuest(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := qemuqmp.LaunchConfig{Dir: dir, Kernel: g.ELF32, Paused: true, DieWithParent: true,
		QMPSocket: filepath.Join(dir, "q"), GDBSocket: filepath.Join(dir, "g")}
	p, err := qemuqmp.Start(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { p.Kill() })
	require.Equal(t, filepath.Join(dir, "q"), p.QMPSocket)
	require.Contains(t, p.Args, "tcg")
	m, err := qemuqmp.Connect(ctx, qemuqmp.Config{QMP: p.QMPSocket, GDB: p.GDBSocket})
	require.NoError(t, err)
	require.NoError(t, m.QMP().Quit(ctx))
	require.NoError(t, p.Wait(ctx), "QMP quit exits with status 0")
	<-m.Done()
	require.NoError(t, m.Close())
}

func TestStartRejectsBadConfig(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]qemuqmp.LaunchConfig{
		"no dir":           {},
		"rr without file":  {Dir: t.TempDir(), RRMode: "record"},
		"rr with smp":      {Dir: t.TempDir(), RRMode: "record", RRFile: "x", SMP: 2},
		"snapshot no disk": {Dir: t.TempDir(), RRMode: "replay", RRFile: "x", RRSnapshot: "init"},
		"bad mode":         {Dir: t.TempDir(), RRMode: "rewind", RRFile: "x"},
	} {
		_, err := qemuqmp.Start(ctx, cfg)
		require.Error(t, err, name)
	}
}

// Terminate shuts QEMU down with SIGTERM, which QEMU treats as a clean quit (exit status 0, so a record log
// gets its header), without a QMP connection.
func TestTerminateQuitsCleanly(t *testing.T) {
	g := qemutest.TinyGuest(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := qemuqmp.Start(ctx, qemuqmp.LaunchConfig{Dir: dir, Kernel: g.ELF32, DieWithParent: true})
	require.NoError(t, err)
	t.Cleanup(func() { p.Kill() })
	require.NoError(t, p.Terminate(ctx))
	select {
	case <-p.Exited():
	default:
		t.Fatal("Terminate returned before QEMU exited")
	}
	require.NoError(t, p.Wait(ctx), "SIGTERM exits QEMU with status 0")
	require.NoError(t, p.Terminate(ctx), "terminating an exited QEMU is a no-op")
}
