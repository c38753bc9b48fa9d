// Package e2e runs the KD target end to end: the synthetic Windows guest boots under real QEMU (TCG), the stub
// (kdproto.Server over windows/target over qemuqmp) serves it over real KD serial and KDNET sockets, and the
// session's host role plays the debugger.
package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdnet"
	"github.com/kdstub/kdstub/kdproto/serial"
	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/qemuqmp/qemutest"
	"github.com/kdstub/kdstub/windows/paging"
	"github.com/kdstub/kdstub/windows/target"
	"github.com/kdstub/kdstub/windows/target/qemumachine"
)

// guests caches one generated guest per CPU count for the whole test binary (generation is deterministic).
var (
	guestMu  sync.Mutex
	guests   = map[int]*winguest.Guest{}
	guestDir string
)

func guest(t testing.TB, cpus int) *winguest.Guest {
	t.Helper()
	guestMu.Lock()
	defer guestMu.Unlock()
	if g, ok := guests[cpus]; ok {
		return g
	}
	if guestDir == "" {
		d, err := os.MkdirTemp("", "kdstub-e2e-guests-")
		require.NoError(t, err)
		guestDir = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := winguest.Build(ctx, winguest.Options{Seed: 7, CPUs: cpus, Processes: 1, NoDisk: true,
		Out: filepath.Join(guestDir, fmt.Sprintf("cpus%d", cpus))})
	require.NoError(t, err)
	guests[cpus] = g
	return g
}

func TestMain(m *testing.M) {
	code := m.Run()
	if guestDir != "" {
		os.RemoveAll(guestDir)
	}
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// stub is a booted guest with the KD target semantics over it.
type stub struct {
	g      *winguest.Guest
	q      *qemutest.QEMU
	m      *qemuqmp.Machine
	target *target.Target
	srv    *kdproto.Server
}

// startStub boots the guest, waits until the kernel is discoverable (its loop runs), and builds the target.
// The guest is left running.
func startStub(t testing.TB, cpus int) *stub {
	t.Helper()
	g := guest(t, cpus)
	q := qemutest.Start(t, qemutest.Options{SMP: cpus, Kernel: g.ELF, MemoryMB: int(g.RAMSize >> 20), Running: true, SharedRAM: true})
	m := q.Connect(t, qemuqmp.Config{Logger: testLogger()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	disc := target.LiveDiscoverer{Phys: m, CPUs: m}
	for {
		if m.Running() {
			require.NoError(t, m.Stop(ctx))
		}
		_, err := disc.Discover(ctx)
		if err == nil {
			break
		}
		require.NoError(t, m.Continue(ctx))
		select {
		case <-ctx.Done():
			t.Fatalf("guest kernel never became discoverable: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	tg, err := target.New(ctx, target.Config{Machine: qemumachine.New(m), Discoverer: disc, Logger: testLogger()})
	require.NoError(t, err)
	require.NoError(t, m.Continue(ctx))
	return &stub{g: g, q: q, m: m, target: tg, srv: &kdproto.Server{Target: tg, Logger: testLogger()}}
}

// debugger is the host end of one KD session to the stub.
type debugger struct {
	h     *kdproto.HostSession
	srv   chan error   // the server's Serve result
	close func() error // closes the debugger's end of the transport (hang up)
}

// serveSession runs Serve on a target session in the background and returns a channel with its result.
func (s *stub) serveSession(ctx context.Context, ts *kdproto.TargetSession) chan error {
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(ctx, ts) }()
	return done
}

func startHost(ctx context.Context, tr kdproto.Transport, d kdproto.Dialect) *kdproto.HostSession {
	h := kdproto.NewHost(tr, kdproto.Config{Dialect: d, RetransmitInterval: 500 * time.Millisecond, Logger: testLogger()})
	go func() { _ = h.Run(ctx) }()
	return h
}

// attachFunc attaches a new debugger to the stub over one transport.
type attachFunc func(t testing.TB, ctx context.Context, s *stub) *debugger

// transports are the four ways a debugger reaches the stub: KD serial on a unix socket and on TCP, and KDNET
// in classic and target= mode.
var transports = []struct {
	name   string
	attach attachFunc
}{
	{"serial-unix", func(t testing.TB, ctx context.Context, s *stub) *debugger { return s.attachSerial(t, ctx, "unix") }},
	{"serial-tcp", func(t testing.TB, ctx context.Context, s *stub) *debugger { return s.attachSerial(t, ctx, "tcp") }},
	{"kdnet-classic", func(t testing.TB, ctx context.Context, s *stub) *debugger { return s.attachKDNET(t, ctx, false) }},
	{"kdnet-target-mode", func(t testing.TB, ctx context.Context, s *stub) *debugger { return s.attachKDNET(t, ctx, true) }},
}

// forEachTransport runs body once per transport, as a subtest named after it.
func forEachTransport(t *testing.T, body func(t *testing.T, attach attachFunc)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { body(t, tr.attach) })
	}
}

// attachSerial connects over a KD serial listener (network "unix" or "tcp").
func (s *stub) attachSerial(t testing.TB, ctx context.Context, network string) *debugger {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "kd.sock")
	}
	ln, err := serial.Listen(ctx, network, addr)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan *serial.Transport, 1)
	go func() {
		tr, err := ln.Accept(ctx)
		if err == nil {
			accepted <- tr
		}
	}()
	htr, err := serial.Dial(ctx, network, ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { htr.Close() })
	var ttr *serial.Transport
	select {
	case ttr = <-accepted:
	case <-ctx.Done():
		t.Fatal("no serial connection accepted")
	}
	t.Cleanup(func() { ttr.Close() })
	d := &debugger{h: startHost(ctx, htr, kdproto.DialectKDCOM), close: htr.Close}
	d.srv = s.serveSession(ctx, kdproto.NewTarget(ttr, kdproto.Config{Dialect: kdproto.DialectKDCOM, Logger: testLogger()}))
	return d
}

// attachKDNET connects over loopback UDP, classic (the target pokes the host) or target= mode.
func (s *stub) attachKDNET(t testing.TB, ctx context.Context, targetMode bool) *debugger {
	t.Helper()
	key, err := kdnet.ParseKey("kdstub.e2e.test.1")
	require.NoError(t, err)
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	var ttr *kdnet.Target
	var htr *kdnet.Host
	if targetMode {
		ttr, err = kdnet.NewTarget(ctx, kdnet.TargetConfig{Key: key, Local: lo})
		require.NoError(t, err)
		htr, err = kdnet.NewHost(ctx, kdnet.HostConfig{Key: key, Local: lo, Target: ttr.LocalAddr()})
		require.NoError(t, err)
	} else {
		htr, err = kdnet.NewHost(ctx, kdnet.HostConfig{Key: key, Local: lo})
		require.NoError(t, err)
		ttr, err = kdnet.NewTarget(ctx, kdnet.TargetConfig{Key: key, Local: lo, Host: htr.LocalAddr(), PokeInterval: 200 * time.Millisecond})
		require.NoError(t, err)
	}
	t.Cleanup(func() { htr.Close(); ttr.Close() })
	select {
	case <-htr.Connected():
	case <-ctx.Done():
		t.Fatal("KDNET handshake did not complete")
	}
	// UDP has no hang-up: a debugger going away is modelled by closing both ends, which ends the session the
	// way a serial hang-up does (serve itself keeps its KDNET transport and resyncs on the next handshake).
	hangUp := func() error { htr.Close(); return ttr.Close() }
	d := &debugger{h: startHost(ctx, htr, kdproto.DialectKDNET), close: hangUp}
	d.srv = s.serveSession(ctx, kdproto.NewTarget(ttr, kdproto.Config{Dialect: kdproto.DialectKDNET}))
	return d
}

// breakIn stops the guest through KD and returns the state change, after a RESET as WinDbg does.
func (d *debugger) breakIn(t testing.TB, ctx context.Context) *kdproto.StateChange {
	t.Helper()
	sc, err := d.h.BreakIn(ctx)
	require.NoError(t, err)
	return sc
}

func (d *debugger) request(t testing.TB, ctx context.Context, api uint32, u kdproto.ManipulateUnion, data []byte, cpu uint16) *kdproto.Manipulate {
	t.Helper()
	m, err := kdproto.NewManipulate(api, u, data)
	require.NoError(t, err)
	m.Processor = cpu
	r, err := d.h.Request(ctx, m)
	require.NoError(t, err, "%s", kdproto.APIName(api))
	return r
}

// read reads virtual memory in 3944-byte requests.
func (d *debugger) read(t testing.TB, ctx context.Context, va uint64, n int) []byte {
	t.Helper()
	var out []byte
	for len(out) < n {
		chunk := min(n-len(out), kdproto.MaxManipulateData)
		r := d.request(t, ctx, kdproto.APIReadVirtualMemory, &kdproto.ReadMemory64{TargetBaseAddress: va + uint64(len(out)), TransferCount: uint32(chunk)}, nil, 0)
		require.Equal(t, kdproto.StatusSuccess, r.ReturnStatus, "read %#x bytes at %#x", chunk, va+uint64(len(out)))
		out = append(out, r.Data...)
	}
	return out
}

func (d *debugger) u64(t testing.TB, ctx context.Context, va uint64) uint64 {
	return binary.LittleEndian.Uint64(d.read(t, ctx, va, 8))
}

func (d *debugger) context(t testing.TB, ctx context.Context, cpu uint16) *kdproto.Context {
	t.Helper()
	r := d.request(t, ctx, kdproto.APIGetContextEx, &kdproto.ContextEx{ByteCount: kdproto.ContextSize}, nil, cpu)
	require.Equal(t, kdproto.StatusSuccess, r.ReturnStatus)
	c, err := kdproto.DecodeContext(r.Data)
	require.NoError(t, err)
	return c
}

// cont sends Continue2; the next state change is returned by wait.
func (d *debugger) cont(t testing.TB, ctx context.Context, trace bool, dr7 uint64) {
	t.Helper()
	tf := uint32(0)
	if trace {
		tf = 1
	}
	d.request(t, ctx, kdproto.APIContinue2, &kdproto.Continue2{ContinueStatus: kdproto.DBGContinue, TraceFlag: tf, Dr7: dr7, CurrentSymbolStart: 1}, nil, 0)
}

func (d *debugger) wait(t testing.TB, ctx context.Context) *kdproto.StateChange {
	t.Helper()
	sc, err := d.h.WaitStateChange(ctx)
	require.NoError(t, err)
	return sc
}

func code(sc *kdproto.StateChange) uint32 { return sc.U.(*kdproto.Exception64).ExceptionCode }

// testLogger logs to stderr at debug level when KDSTUB_E2E_DEBUG is set, and discards otherwise.
func testLogger() *slog.Logger {
	if os.Getenv("KDSTUB_E2E_DEBUG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// translate resolves va through the guest's page tables with the paging package directly.
func translate(t testing.TB, ctx context.Context, s *stub, cr3, va uint64) uint64 {
	t.Helper()
	pa, err := paging.New(s.m, cr3, paging.ModeX64).Translate(ctx, va)
	require.NoError(t, err)
	return pa
}
