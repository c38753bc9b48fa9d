package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdnet"
	"github.com/kdstub/kdstub/kdproto/serial"
	"github.com/kdstub/kdstub/windows/target"
)

// serveSpec is one transport serve listens on.
type serveSpec struct {
	serialNet, serialAddr string // "tcp"/"unix" and the address

	kdnetHost   netip.AddrPort // classic mode: the debugger to poke
	kdnetLocal  netip.AddrPort // where to bind
	kdnetListen bool           // target= mode
	key         kdnet.ControlKey
	keyGiven    bool
}

// parseServeTransports returns the transports to serve: KD serial, KDNET (classic or target= mode), or
// KD serial plus one KDNET mode at once.
func parseServeTransports(c *cli.Context) ([]*serveSpec, error) {
	if c.IsSet("kdnet") && c.IsSet("kdnet-listen") {
		return nil, errors.New("give at most one of --kdnet and --kdnet-listen")
	}
	var specs []*serveSpec
	if c.IsSet("serial") {
		s, err := parseSerialSpec(c.String("serial"))
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	if c.IsSet("kdnet") || c.IsSet("kdnet-listen") {
		s, err := parseKDNETSpec(c)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	if len(specs) == 0 {
		return nil, errors.New("give at least one transport: --serial and/or one of --kdnet, --kdnet-listen")
	}
	return specs, nil
}

func parseSerialSpec(v string) (*serveSpec, error) {
	s := &serveSpec{}
	switch {
	case strings.HasPrefix(v, "tcp-listen:"):
		s.serialNet, s.serialAddr = "tcp", strings.TrimPrefix(v, "tcp-listen:")
	case strings.HasPrefix(v, "unix-listen:"):
		s.serialNet, s.serialAddr = "unix", strings.TrimPrefix(v, "unix-listen:")
	default:
		return nil, fmt.Errorf("--serial %q: want tcp-listen:ADDR:PORT or unix-listen:PATH", v)
	}
	if s.serialAddr == "" {
		return nil, fmt.Errorf("--serial %q: empty address", v)
	}
	if s.serialNet == "tcp" && strings.HasPrefix(s.serialAddr, ":") {
		s.serialAddr = "127.0.0.1" + s.serialAddr // loopback unless an address is given
	}
	return s, nil
}

func parseKDNETSpec(c *cli.Context) (*serveSpec, error) {
	s := &serveSpec{}
	if c.IsSet("key") {
		k, err := kdnet.ParseKey(c.String("key"))
		if err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		s.key, s.keyGiven = k, true
	} else {
		k, err := kdnet.Generate(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate a KDNET key: %w", err)
		}
		s.key = k
	}
	if c.IsSet("kdnet-listen") {
		ap, err := parseAddrPortLoopback(c.String("kdnet-listen"))
		if err != nil {
			return nil, fmt.Errorf("--kdnet-listen: %w", err)
		}
		s.kdnetListen, s.kdnetLocal = true, ap
		return s, nil
	}
	host, err := netip.ParseAddrPort(c.String("kdnet"))
	if err != nil {
		return nil, fmt.Errorf("--kdnet: %w", err)
	}
	s.kdnetHost = host
	switch {
	case c.IsSet("kdnet-source"):
		if s.kdnetLocal, err = netip.ParseAddrPort(c.String("kdnet-source")); err != nil {
			return nil, fmt.Errorf("--kdnet-source: %w", err)
		}
	case host.Addr().IsLoopback():
		// The debugger holds PORT on this host; send from an ephemeral loopback port (it replies to the source).
		s.kdnetLocal = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0)
	default:
		// kdnet.dll sends from the same port it targets; some clients insist on it.
		s.kdnetLocal = netip.AddrPortFrom(netip.IPv4Unspecified(), host.Port())
	}
	return s, nil
}

func (s *serveSpec) describe() string {
	switch {
	case s.serialNet != "":
		return "kd-serial " + s.serialNet + ":" + s.serialAddr
	case s.kdnetListen:
		return "kdnet target= mode on " + s.kdnetLocal.String()
	}
	return "kdnet classic to " + s.kdnetHost.String() + " from " + s.kdnetLocal.String()
}

// debuggerGate lets one debugger at a time drive the target, whichever transport it came on: two KD
// sessions interleaving continues and break-ins on one guest would confuse both debuggers.
type debuggerGate struct {
	slot chan struct{}
	mu   sync.Mutex
	who  string
}

func newDebuggerGate() *debuggerGate { return &debuggerGate{slot: make(chan struct{}, 1)} }

// tryAcquire takes the gate for who, or reports who holds it.
func (g *debuggerGate) tryAcquire(who string) (holder string, ok bool) {
	select {
	case g.slot <- struct{}{}:
		g.mu.Lock()
		g.who = who
		g.mu.Unlock()
		return "", true
	default:
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.who, false
	}
}

// acquire waits for the gate.
func (g *debuggerGate) acquire(ctx context.Context, who string) error {
	select {
	case g.slot <- struct{}{}:
		g.mu.Lock()
		g.who = who
		g.mu.Unlock()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *debuggerGate) release() { <-g.slot }

// serveAll runs every transport until ctx ends or one fails for good (the guest is gone); the first such
// error ends them all.
func serveAll(ctx context.Context, lg *slog.Logger, out io.Writer, srv *kdproto.Server, specs []*serveSpec) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gate := newDebuggerGate()
	errs := make(chan error, len(specs))
	for _, s := range specs {
		go func() {
			err := s.serve(ctx, lg, out, srv, gate)
			cancel()
			errs <- err
		}()
	}
	var first error
	for range specs {
		if err := <-errs; first == nil || (errors.Is(first, context.Canceled) && !errors.Is(err, context.Canceled)) {
			first = err
		}
	}
	return first
}

// serve runs the transport until ctx ends: serial accepts one debugger after another; KDNET keeps one socket
// and one KD session, resynchronised whenever a new debugger completes a handshake.
func (s *serveSpec) serve(ctx context.Context, lg *slog.Logger, out io.Writer, srv *kdproto.Server, gate *debuggerGate) error {
	if s.serialNet != "" {
		return s.serveSerial(ctx, lg, out, srv, gate)
	}
	return s.serveKDNET(ctx, lg, out, srv, gate)
}

func (s *serveSpec) serveSerial(ctx context.Context, lg *slog.Logger, out io.Writer, srv *kdproto.Server, gate *debuggerGate) error {
	ln, err := serial.Listen(ctx, s.serialNet, s.serialAddr)
	if err != nil {
		return err
	}
	defer ln.Close()
	if s.serialNet == "tcp" {
		fmt.Fprintf(out, "KD serial listening on %s\nWinDbg: windbg -k com:ipport=%d,port=%s\n", ln.Addr(), portOf(ln.Addr().String()), hostOf(ln.Addr().String()))
	} else {
		fmt.Fprintf(out, "KD serial listening on unix socket %s\n", ln.Addr())
	}
	// Accept keeps running while a debugger is served, so a second one is refused at once instead of waiting
	// unanswered in the listen backlog.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fatal := make(chan error, 1)
	for {
		tr, err := ln.Accept(ctx)
		if err != nil {
			select {
			case err = <-fatal:
				return err
			default:
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if holder, ok := gate.tryAcquire(s.describe()); !ok {
			lg.Warn("debugger refused: another debugger is attached", "transport", s.describe(), "attached", holder)
			tr.Close()
			continue
		}
		lg.Info("debugger connected", "transport", s.describe())
		go func() {
			defer gate.release()
			sess := kdproto.NewTarget(tr, kdproto.Config{Dialect: kdproto.DialectKDCOM, Logger: lg.With("layer", "session")})
			err := srv.Serve(ctx, sess)
			tr.Close()
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, target.ErrGone) {
				fatal <- err // the guest is gone; the next debugger would find nothing to debug
				cancel()
				return
			}
			lg.Info("debugger disconnected", "transport", s.describe(), "reason", err)
		}()
	}
}

// serveKDNET serves the KDNET session once a debugger has completed a handshake and no other debugger is
// attached. UDP has no hang-up, so a KDNET debugger keeps the gate until serve ends.
func (s *serveSpec) serveKDNET(ctx context.Context, lg *slog.Logger, out io.Writer, srv *kdproto.Server, gate *debuggerGate) error {
	var sess atomic.Pointer[kdproto.TargetSession]
	connected := make(chan netip.AddrPort, 1)
	cfg := kdnet.TargetConfig{
		Key: s.key, Local: s.kdnetLocal, Logger: lg.With("layer", "kdnet"),
		OnConnect: func(host netip.AddrPort) {
			select {
			case connected <- host:
			default:
			}
			// A new debugger may start its packet ids over without a RESET.
			if ts := sess.Load(); ts != nil {
				go func() { _ = ts.Resync(ctx) }()
			}
		},
	}
	if !s.kdnetListen {
		cfg.Host = s.kdnetHost
	}
	tr, err := kdnet.NewTarget(ctx, cfg)
	if err != nil {
		return err
	}
	defer tr.Close()
	if s.kdnetListen {
		fmt.Fprintf(out, "KDNET (target= mode) listening on %s\nWinDbg: windbg -k net:port=%d,key=%s,target=%s\n",
			tr.LocalAddr(), tr.LocalAddr().Port(), s.key, tr.LocalAddr().Addr())
	} else {
		fmt.Fprintf(out, "KDNET poking %s from %s\nWinDbg: windbg -k net:port=%d,key=%s\n",
			s.kdnetHost, tr.LocalAddr(), s.kdnetHost.Port(), s.key)
	}
	var host netip.AddrPort
	select {
	case host = <-connected:
	case <-ctx.Done():
		return ctx.Err()
	}
	if holder, ok := gate.tryAcquire(s.describe()); !ok {
		lg.Warn("KDNET debugger waits: another debugger is attached", "debugger", host, "attached", holder)
		if err := gate.acquire(ctx, s.describe()); err != nil {
			return err
		}
	}
	defer gate.release()
	lg.Info("debugger connected", "transport", s.describe(), "debugger", host)
	ts := kdproto.NewTarget(tr, kdproto.Config{Dialect: kdproto.DialectKDNET, Logger: lg.With("layer", "session")})
	sess.Store(ts)
	return srv.Serve(ctx, ts)
}

// parseAddrPortLoopback parses ADDR:PORT; a bare :PORT means loopback.
func parseAddrPortLoopback(s string) (netip.AddrPort, error) {
	if strings.HasPrefix(s, ":") {
		s = "127.0.0.1" + s
	}
	return netip.ParseAddrPort(s)
}

func hostOf(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return addr
	}
	return ap.Addr().String()
}

func portOf(addr string) uint16 {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return 0
	}
	return ap.Port()
}
