package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/qemuqmp/qmp"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runCLI(ctx context.Context, out *syncBuffer, args ...string) error {
	app := newApp()
	app.Writer = out
	return app.RunContext(ctx, append([]string{"kdstub", "--log-level", "warn"}, args...))
}

// TestFixtureBuildAndRun builds a guest through the CLI, runs it, checks the printed endpoints answer QMP, and
// that cancelling (what SIGINT/SIGTERM do through main's signal context) stops QEMU and cleans up.
func TestFixtureBuildAndRun(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("qemu-system-x86_64 is required under CI")
		}
		t.Skip("qemu-system-x86_64 not installed")
	}
	dir := filepath.Join(t.TempDir(), "guest")
	var out syncBuffer
	buildArgs := []string{"fixture", "build", "--out", dir, "--seed", "3", "--cpus", "2"}
	if _, err := exec.LookPath("mkntfs"); err != nil {
		buildArgs = append(buildArgs, "--no-disk") // the disk is checked in fixtures/winguest
	}
	require.NoError(t, runCLI(context.Background(), &out, buildArgs...))
	require.Contains(t, out.String(), "dir="+dir)
	m, err := winguest.Load(dir)
	require.NoError(t, err)
	require.Len(t, m.CPUs, 2)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	qmpPath := filepath.Join(t.TempDir(), "my-qmp.sock")
	done, endpoints := startRun(t, ctx, "--dir", dir, "--qmp", "unix:"+qmpPath)
	require.Equal(t, "unix:"+qmpPath, endpoints["qmp"])
	require.Equal(t, "unix:"+filepath.Join(dir, "gdb.sock"), endpoints["gdb"])

	qctx, qcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer qcancel()
	cl, err := qmp.Dial(qctx, endpoints["qmp"], nil)
	require.NoError(t, err)
	running, err := cl.Running(qctx)
	require.NoError(t, err)
	require.True(t, running)
	require.NoError(t, cl.Close())
	conn, err := net.Dial("unix", strings.TrimPrefix(endpoints["gdb"], "unix:"))
	require.NoError(t, err)
	conn.Close()

	stopRun(t, cancel, done)
	pid, err := strconv.Atoi(endpoints["pid"])
	require.NoError(t, err)
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "qemu pid %d is gone", pid)
	_, err = os.Lstat(qmpPath)
	require.True(t, os.IsNotExist(err), "endpoint symlink removed")
}

func startRun(t *testing.T, ctx context.Context, args ...string) (chan error, map[string]string) {
	t.Helper()
	var runOut syncBuffer
	done := make(chan error, 1)
	go func() { done <- runCLI(ctx, &runOut, append([]string{"fixture", "run"}, args...)...) }()
	var endpoints map[string]string
	require.Eventually(t, func() bool {
		endpoints = map[string]string{}
		for _, l := range strings.Split(runOut.String(), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				endpoints[k] = v
			}
		}
		select {
		case err := <-done:
			t.Fatalf("fixture run ended early: %v", err)
		default:
		}
		return endpoints["pid"] != ""
	}, 20*time.Second, 20*time.Millisecond, "run prints its endpoints")
	return done, endpoints
}

func stopRun(t *testing.T, cancel context.CancelFunc, done chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("fixture run did not stop after cancellation")
	}
}

// TestFixtureRecordReplay records a 1-CPU guest's execution and replays it through fixture run.
func TestFixtureRecordReplay(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("qemu-system-x86_64 is required under CI")
		}
		t.Skip("qemu-system-x86_64 not installed")
	}
	dir := filepath.Join(t.TempDir(), "guest")
	var out syncBuffer
	require.NoError(t, runCLI(context.Background(), &out, "fixture", "build", "--out", dir, "--no-disk"))
	rec := filepath.Join(t.TempDir(), "rec.bin")

	ctx, cancel := context.WithCancel(context.Background())
	done, _ := startRun(t, ctx, "--dir", dir, "--record", rec)
	time.Sleep(500 * time.Millisecond)
	stopRun(t, cancel, done)
	st, err := os.Stat(rec)
	require.NoError(t, err)
	require.Greater(t, st.Size(), int64(0), "recording written")

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	done2, ep := startRun(t, ctx2, "--dir", dir, "--replay", rec)
	qctx, qcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer qcancel()
	cl, err := qmp.Dial(qctx, ep["qmp"], nil)
	require.NoError(t, err)
	r, err := cl.QueryReplay(qctx)
	require.NoError(t, err)
	require.NoError(t, cl.Close())
	require.Equal(t, "play", r.Mode) // QMP query-replay calls replay mode "play"
	stopRun(t, cancel2, done2)

	// Two CPUs cannot be recorded (QEMU 7.2): the command says so instead of starting.
	dir2 := filepath.Join(t.TempDir(), "guest2")
	require.NoError(t, runCLI(context.Background(), &out, "fixture", "build", "--out", dir2, "--cpus", "2", "--no-disk"))
	err = runCLI(context.Background(), &out, "fixture", "run", "--dir", dir2, "--record", rec)
	require.ErrorContains(t, err, "smp")
}
