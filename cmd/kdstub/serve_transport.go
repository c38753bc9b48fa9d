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
	"sync/atomic"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdnet"
	"github.com/kdstub/kdstub/kdproto/serial"
	"github.com/kdstub/kdstub/windows/target"
)

// serveSpec is the one transport serve listens on.
type serveSpec struct {
	serialNet, serialAddr string // "tcp"/"unix" and the address

	kdnetHost   netip.AddrPort // classic mode: the debugger to poke
	kdnetLocal  netip.AddrPort // where to bind
	kdnetListen bool           // target= mode
	key         kdnet.ControlKey
	keyGiven    bool
}

func parseServeTransport(c *cli.Context) (*serveSpec, error) {
	n := 0
	for _, f := range []string{"kdnet", "kdnet-listen", "serial"} {
		if c.IsSet(f) {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("give exactly one of --kdnet, --kdnet-listen or --serial")
	}
	s := &serveSpec{}
	if c.IsSet("serial") {
		v := c.String("serial")
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

// serve runs the transport until ctx ends: serial accepts one debugger after another; KDNET keeps one socket
// and one KD session, resynchronised whenever a new debugger completes a handshake.
func (s *serveSpec) serve(ctx context.Context, lg *slog.Logger, out io.Writer, srv *kdproto.Server) error {
	if s.serialNet != "" {
		return s.serveSerial(ctx, lg, out, srv)
	}
	return s.serveKDNET(ctx, lg, out, srv)
}

func (s *serveSpec) serveSerial(ctx context.Context, lg *slog.Logger, out io.Writer, srv *kdproto.Server) error {
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
	for {
		tr, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		lg.Info("debugger connected", "transport", "kd-serial")
		sess := kdproto.NewTarget(tr, kdproto.Config{Dialect: kdproto.DialectKDCOM, Logger: lg.With("layer", "session")})
		err = srv.Serve(ctx, sess)
		tr.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, target.ErrGone) {
			return err // the guest is gone; the next debugger would find nothing to debug
		}
		lg.Info("debugger disconnected", "reason", err)
	}
}

func (s *serveSpec) serveKDNET(ctx context.Context, lg *slog.Logger, out io.Writer, srv *kdproto.Server) error {
	var sess atomic.Pointer[kdproto.TargetSession]
	cfg := kdnet.TargetConfig{
		Key: s.key, Local: s.kdnetLocal, Logger: lg.With("layer", "kdnet"),
		OnConnect: func(host netip.AddrPort) {
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
