package e2e

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdnet"
	"github.com/kdstub/kdstub/kdproto/serial"
	"github.com/kdstub/kdstub/qemuqmp/qemutest"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// kdstubBinary builds cmd/kdstub once per test binary.
func kdstubBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kdstub-e2e-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "kdstub")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/kdstub/kdstub/cmd/kdstub").CombinedOutput()
		if err != nil {
			binErr = err
			t.Logf("go build: %s", out)
		}
	})
	require.NoError(t, binErr)
	return binPath
}

// startServe runs `kdstub serve` against a booted fixture guest and returns its stdout lines as they come.
func startServe(t *testing.T, q *qemutest.QEMU, args ...string) <-chan string {
	t.Helper()
	cmd := exec.Command(kdstubBinary(t), append([]string{"--log-level", "warn", "serve", "--qmp", "unix:" + q.QMPSocket, "--gdb", "unix:" + q.GDBSocket}, args...)...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("kdstub serve exited with %v; stderr:\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("kdstub serve ignored SIGTERM; stderr:\n%s", stderr.String())
		}
	})
	return lines
}

func bootGuest(t *testing.T, sharedRAM bool) *qemutest.QEMU {
	g := guest(t, 1)
	return qemutest.Start(t, qemutest.Options{Kernel: g.ELF, MemoryMB: int(g.RAMSize >> 20), Running: true, SharedRAM: sharedRAM})
}

// breakInUntilKernel breaks in until the kernel is up (the stub discovers it at the first break-in) and
// returns the GetVersion answer.
func breakInUntilKernel(t *testing.T, ctx context.Context, d *debugger) *kdproto.GetVersion64 {
	t.Helper()
	for {
		d.breakIn(t, ctx)
		v := d.request(t, ctx, kdproto.APIGetVersion, nil, nil, 0)
		if v.ReturnStatus == kdproto.StatusSuccess {
			return v.U.(*kdproto.GetVersion64)
		}
		d.cont(t, ctx, false, 0x400)
		select {
		case <-ctx.Done():
			t.Fatal("the kernel never became discoverable")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestServeCommandSerial runs the real CLI on a unix socket with the shared-RAM backend, attaches, checks the
// version and the decoded KDBG, and detaches.
func TestServeCommandSerial(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	q := bootGuest(t, true)
	sock := filepath.Join(t.TempDir(), "kd.sock")
	startServe(t, q, "--serial", "unix-listen:"+sock, "--ram-file", q.SharedRAM)
	var tr *serial.Transport
	for tr == nil {
		var err error
		if tr, err = serial.Dial(ctx, "unix", sock); err != nil {
			select {
			case <-ctx.Done():
				t.Fatalf("serve never listened: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	defer tr.Close()
	d := &debugger{h: startHost(ctx, tr, kdproto.DialectKDCOM)}
	v := breakInUntilKernel(t, ctx, d)
	man := guest(t, 1).Manifest
	require.Equal(t, uint64(man.KernelBase), v.KernBase)
	require.Equal(t, []byte(man.KDBG.Plaintext), d.read(t, ctx, uint64(man.KDBG.Address), int(man.KDBG.Size)))
	d.cont(t, ctx, false, 0x400)
}

// TestServeCommandKDNETGeneratedKey runs the CLI in KDNET target= mode without --key: it must print a
// WinDbg command line whose key lets a debugger connect.
func TestServeCommandKDNETGeneratedKey(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	q := bootGuest(t, false)
	addr := freeUDPAddr(t)
	lines := startServe(t, q, "--kdnet-listen", addr)
	key := printedKDNETKey(t, ctx, lines)
	k, err := kdnet.ParseKey(key)
	require.NoError(t, err)
	// Two debuggers one after the other on the same long-lived KDNET target: the second one's packet ids
	// start over, which the stub must accept (it resynchronises on every new handshake).
	for i := 0; i < 2; i++ {
		htr, err := kdnet.NewHost(ctx, kdnet.HostConfig{Key: k, Local: netip.MustParseAddrPort("127.0.0.1:0"), Target: netip.MustParseAddrPort(addr)})
		require.NoError(t, err)
		select {
		case <-htr.Connected():
		case <-ctx.Done():
			t.Fatalf("debugger %d: no KDNET handshake with the printed key", i)
		}
		hctx, cancel := context.WithCancel(ctx)
		d := &debugger{h: startHost(hctx, htr, kdproto.DialectKDNET)}
		v := breakInUntilKernel(t, hctx, d)
		require.Equal(t, uint64(guest(t, 1).Manifest.KernelBase), v.KernBase, "debugger %d", i)
		d.cont(t, hctx, false, 0x400)
		cancel()
		htr.Close()
	}
}

// freeUDPAddr returns a loopback UDP address that was free a moment ago.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	return pc.LocalAddr().String()
}

// printedKDNETKey waits for the WinDbg target= command line serve prints for a generated key and returns the key.
func printedKDNETKey(t *testing.T, ctx context.Context, lines <-chan string) string {
	t.Helper()
	re := regexp.MustCompile(`windbg -k net:port=(\d+),key=([0-9a-z.]+),target=`)
	for {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "serve exited before printing the WinDbg command line")
			if m := re.FindStringSubmatch(l); m != nil {
				return m[2]
			}
		case <-ctx.Done():
			t.Fatal("no WinDbg command line printed")
		}
	}
}
