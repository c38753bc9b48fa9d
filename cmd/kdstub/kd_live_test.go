package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdnet"
	"github.com/kdstub/kdstub/kdproto/kdtest"
)

// liveStub is a fixture guest under real QEMU served by `kdstub serve` over loopback KDNET (target= mode), all
// started through the CLI's own code paths.
type liveStub struct {
	dir    string
	addr   string
	key    string
	kdArgs []string // how `kdstub kd` reaches the stub
	m      *winguest.Manifest
}

// Transports startLiveStub can serve.
const (
	viaKDNETTarget  = "kdnet-target"  // serve --kdnet-listen, kd --kdnet-target
	viaKDNETClassic = "kdnet-classic" // kd --kdnet-listen, serve --kdnet (pokes the debugger)
	viaSerialTCP    = "serial-tcp"    // serve --serial tcp-listen:, kd --serial tcp:
)

func requireQEMU(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is required under CI", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
}

func startLiveStub(t *testing.T, cpus int, via string) *liveStub {
	t.Helper()
	requireQEMU(t)
	dir := filepath.Join(t.TempDir(), "guest")
	var out syncBuffer
	require.NoError(t, runCLI(context.Background(), &out, "fixture", "build", "--out", dir, "--cpus", fmt.Sprint(cpus), "--no-disk"))
	m, err := winguest.Load(dir)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	ramFile, err := demoRAMFile(t.TempDir())
	require.NoError(t, err)
	runCtx, runCancel := context.WithCancel(ctx)
	run := startSubcommand(runCtx, "fixture", "run", "--dir", dir, "--ram-file", ramFile)
	t.Cleanup(func() {
		require.NoError(t, run.stop(runCancel))
		_, err := os.Stat(ramFile)
		require.True(t, os.IsNotExist(err), "RAM file %s left behind", ramFile)
	})
	require.NoError(t, run.waitFor(ctx, "fixture run", "pid="))
	require.NoError(t, waitGuestBooted(ctx, ramFile, m))

	port, err := freeUDPPort()
	require.NoError(t, err)
	key, err := kdnet.Generate(rand.Reader)
	require.NoError(t, err)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ls := &liveStub{dir: dir, addr: addr, key: key.String(), m: m}
	args := []string{"serve", "--qmp", "unix:" + filepath.Join(dir, "qmp.sock"), "--gdb", "unix:" + filepath.Join(dir, "gdb.sock"), "--ram-file", ramFile}
	ready := "listening on"
	switch via {
	case viaKDNETTarget:
		args = append(args, "--kdnet-listen", addr, "--key", ls.key)
		ls.kdArgs = []string{"--kdnet-target", addr, "--key", ls.key}
	case viaKDNETClassic:
		args = append(args, "--kdnet", addr, "--key", ls.key)
		ls.kdArgs = []string{"--kdnet-listen", addr, "--key", ls.key}
		ready = "KDNET poking"
	case viaSerialTCP:
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ls.addr = tcp.Addr().String()
		require.NoError(t, tcp.Close())
		args = append(args, "--serial", "tcp-listen:"+ls.addr)
		ls.kdArgs = []string{"--serial", "tcp:" + ls.addr}
	default:
		t.Fatalf("unknown transport %q", via)
	}
	serveCtx, serveCancel := context.WithCancel(ctx)
	srv := startSubcommand(serveCtx, args...)
	t.Cleanup(func() { require.NoError(t, srv.stop(serveCancel)) }) // runs before the QEMU stop (LIFO)
	require.NoError(t, srv.waitFor(ctx, "serve", ready))
	return ls
}

// connect opens a KDNET host session to the stub, optionally recording its packets; done ends it.
func (ls *liveStub) connect(t *testing.T, ctx context.Context, rec **kdtest.Recorder) (*kdproto.Client, func()) {
	t.Helper()
	key, err := kdnet.ParseKey(ls.key)
	require.NoError(t, err)
	target := netip.MustParseAddrPort(ls.addr)
	h, err := kdnet.NewHost(ctx, kdnet.HostConfig{Key: key, Target: target, Local: netip.AddrPortFrom(target.Addr(), 0)})
	require.NoError(t, err)
	var tr kdproto.Transport = h
	if rec != nil {
		*rec = kdtest.NewRecorder(h)
		tr = *rec
	}
	hs := kdproto.NewHost(tr, kdproto.Config{Dialect: kdproto.DialectKDNET})
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = hs.Run(rctx); close(done) }()
	return kdproto.NewClient(hs, nil), func() { cancel(); <-done; h.Close() }
}

// kd runs `kdstub kd` in-process against the stub with JSON output and returns one result per command.
func (ls *liveStub) kd(t *testing.T, script string) []kdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out syncBuffer
	args := append(append([]string{"kd"}, ls.kdArgs...), "--json", "-c", script)
	require.NoError(t, runCLI(ctx, &out, args...))
	return parseKDResults(t, out.String())
}
