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
	require.NoError(t, runCLI(context.Background(), &out, "fixture", "build", "--out", dir, "--seed", "3", "--cpus", "2", "--no-disk"))
	require.Contains(t, out.String(), "dir="+dir)
	m, err := winguest.Load(dir)
	require.NoError(t, err)
	require.Len(t, m.CPUs, 2)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runOut syncBuffer
	done := make(chan error, 1)
	qmpPath := filepath.Join(t.TempDir(), "my-qmp.sock")
	go func() { done <- runCLI(ctx, &runOut, "fixture", "run", "--dir", dir, "--qmp", "unix:"+qmpPath) }()

	var endpoints map[string]string
	require.Eventually(t, func() bool {
		endpoints = map[string]string{}
		for _, l := range strings.Split(runOut.String(), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				endpoints[k] = v
			}
		}
		return endpoints["pid"] != ""
	}, 20*time.Second, 20*time.Millisecond, "run prints its endpoints")
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

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("fixture run did not stop after cancellation")
	}
	pid, err := strconv.Atoi(endpoints["pid"])
	require.NoError(t, err)
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "qemu pid %d is gone", pid)
	_, err = os.Lstat(qmpPath)
	require.True(t, os.IsNotExist(err), "endpoint symlink removed")
}
