package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdnet"
	"github.com/kdstub/kdstub/kdproto/serial"
	"github.com/kdstub/kdstub/windows/debugger"
)

// kdCommand is the built-in KD client: it connects the way WinDbg does, breaks in, and runs WinDbg-like commands.
func kdCommand() *cli.Command {
	return &cli.Command{
		Name:  "kd",
		Usage: "a small WinDbg-like kernel debugger: attach over KDNET or KD serial and run commands",
		Description: "Exactly one of --kdnet-listen, --kdnet-target or --serial is required. Commands come from -c " +
			"(separated by ';'), --script FILE (one or more per line), or stdin. After the commands the target is " +
			"resumed (detach). Commands: version, r [reg], db/dw/dd/dq/dp ADDR [L n], !db/!dd/!dq PADDR [L n], " +
			"u [ADDR] [L n], lm, !process 0 0, .process ADDR, ~N, bp ADDR, ba r|w|e SIZE ADDR, bl, bc N|*, g, t, p, " +
			"k, rdmsr MSR, !pcr [N], q. Addresses: hex, nt!Export+0x10, @rip.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kdnet-listen", Usage: "classic KDNET: listen on ADDR:PORT and answer the target's pokes (windbg -k net:port=)"},
			&cli.StringFlag{Name: "kdnet-target", Usage: "KDNET target= mode: connect to a target listening on ADDR:PORT"},
			&cli.StringFlag{Name: "key", Usage: "KDNET key w.x.y.z"},
			&cli.StringFlag{Name: "serial", Usage: "KD serial: tcp:ADDR:PORT or unix:PATH"},
			&cli.StringFlag{Name: "command", Aliases: []string{"c"}, Usage: "commands to run, separated by ';'"},
			&cli.StringFlag{Name: "script", Usage: "file of commands"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object per command"},
			&cli.DurationFlag{Name: "attach-timeout", Value: 60 * time.Second, Usage: "how long to wait for the target"},
		},
		Action: kdAction,
	}
}

// kdOptions is everything `kd` needs, so the demo can run the same code in-process.
type kdOptions struct {
	KDNETListen, KDNETTarget, Key, Serial string
	Commands, Script                      string
	JSON                                  bool
	AttachTimeout                         time.Duration
	Stdin                                 io.Reader
	Interactive                           bool
}

func kdAction(c *cli.Context) error {
	o := kdOptions{
		KDNETListen: c.String("kdnet-listen"), KDNETTarget: c.String("kdnet-target"), Key: c.String("key"),
		Serial: c.String("serial"), Commands: c.String("command"), Script: c.String("script"), JSON: c.Bool("json"),
		AttachTimeout: c.Duration("attach-timeout"), Stdin: os.Stdin,
	}
	if o.Commands == "" && o.Script == "" {
		if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			o.Interactive = true
		}
	}
	return runKD(c.Context, logger(c), c.App.Writer, o)
}

// runKD connects, attaches, runs the commands and detaches.
func runKD(ctx context.Context, lg *slog.Logger, out io.Writer, o kdOptions) error {
	tr, dialect, err := kdTransport(ctx, lg, o)
	if err != nil {
		return fmt.Errorf("kd: %w", err)
	}
	defer tr.Close()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	hs := kdproto.NewHost(tr, kdproto.Config{Dialect: dialect, Logger: lg.With("layer", "session")})
	runDone := make(chan error, 1)
	go func() { runDone <- hs.Run(runCtx) }()
	defer func() { cancel(); <-runDone }()

	out = &syncWriter{w: out}
	go drainTargetIO(runCtx, hs, out, o.JSON, lg)

	client := kdproto.NewClient(hs, lg.With("layer", "client"))
	actx, acancel := context.WithTimeout(ctx, o.AttachTimeout)
	err = client.Attach(actx)
	acancel()
	if err != nil {
		if client.Stop != nil {
			// Do not leave the guest frozen behind a debugger that could not attach.
			_ = client.Continue2(ctx, kdproto.ContinueOptions{})
		}
		return fmt.Errorf("kd: %w", &attachError{err})
	}
	eng, err := debugger.New(ctx, client, out, debugger.Options{JSON: o.JSON, Logger: lg.With("layer", "debugger")})
	if err != nil {
		return fmt.Errorf("kd: %w", err)
	}
	if !o.JSON {
		fmt.Fprintf(out, "Connected to Windows %d x64 target (%d procs); kernel base %#x\n",
			client.Version.MinorVersion, client.NumberProcessors(), client.Version.KernBase)
	}
	err = kdRunCommands(ctx, eng, o)
	if errors.Is(err, debugger.ErrQuit) {
		err = nil
	}
	if derr := eng.Detach(ctx); derr != nil && err == nil {
		err = derr
	}
	if err != nil {
		return fmt.Errorf("kd: %w", err)
	}
	return nil
}

func kdRunCommands(ctx context.Context, eng *debugger.Engine, o kdOptions) error {
	if o.Script != "" {
		f, err := os.Open(o.Script)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := eng.Run(ctx, f, false); err != nil {
			return err
		}
	}
	if o.Commands != "" {
		if err := eng.Execute(ctx, o.Commands); err != nil {
			return err
		}
	}
	if o.Script == "" && o.Commands == "" && o.Stdin != nil {
		return eng.Run(ctx, o.Stdin, o.Interactive)
	}
	return nil
}

// kdTransport opens the one transport the options name.
func kdTransport(ctx context.Context, lg *slog.Logger, o kdOptions) (kdproto.Transport, kdproto.Dialect, error) {
	n := 0
	for _, v := range []string{o.KDNETListen, o.KDNETTarget, o.Serial} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return nil, 0, errors.New("give exactly one of --kdnet-listen, --kdnet-target or --serial")
	}
	if o.Serial != "" {
		network, addr, ok := strings.Cut(o.Serial, ":")
		if !ok || (network != "tcp" && network != "unix") || addr == "" {
			return nil, 0, fmt.Errorf("--serial %q: want tcp:ADDR:PORT or unix:PATH", o.Serial)
		}
		tr, err := serial.Dial(ctx, network, addr)
		if err != nil {
			return nil, 0, err
		}
		return tr, kdproto.DialectKDCOM, nil
	}
	if o.Key == "" {
		return nil, 0, errors.New("KDNET needs --key")
	}
	key, err := kdnet.ParseKey(o.Key)
	if err != nil {
		return nil, 0, fmt.Errorf("--key: %w", err)
	}
	cfg := kdnet.HostConfig{Key: key, Logger: lg.With("layer", "kdnet")}
	if o.KDNETListen != "" {
		if cfg.Local, err = netip.ParseAddrPort(o.KDNETListen); err != nil {
			return nil, 0, fmt.Errorf("--kdnet-listen: %w", err)
		}
	} else {
		if cfg.Target, err = netip.ParseAddrPort(o.KDNETTarget); err != nil {
			return nil, 0, fmt.Errorf("--kdnet-target: %w", err)
		}
		cfg.Local = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		if cfg.Target.Addr().IsLoopback() {
			cfg.Local = netip.AddrPortFrom(cfg.Target.Addr(), 0)
		}
	}
	h, err := kdnet.NewHost(ctx, cfg)
	if err != nil {
		return nil, 0, err
	}
	return h, kdproto.DialectKDNET, nil
}

// attachError marks a failure to attach (the target may simply not be up yet).
type attachError struct{ err error }

func (e *attachError) Error() string { return e.err.Error() }
func (e *attachError) Unwrap() error { return e.err }

// syncWriter serialises writes from the command loop and the target-output goroutine.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// drainTargetIO consumes what the target sends besides stops and responses: DbgPrint text (DEBUG_IO) is shown as
// WinDbg shows it; anything else is logged. Draining matters: an undelivered packet stays unacknowledged and the
// target would retransmit it forever.
func drainTargetIO(ctx context.Context, hs *kdproto.HostSession, out io.Writer, asJSON bool, lg *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-hs.IO():
			body, err := p.Body()
			if err != nil {
				lg.Debug("undecodable packet from the target", "packet", p.String(), "err", err)
				continue
			}
			d, ok := body.(*kdproto.DebugIO)
			switch {
			case ok && d.APINumber == kdproto.APIPrintString && !asJSON:
				fmt.Fprint(out, string(d.Data))
			case ok && d.APINumber == kdproto.APIPrintString:
				lg.Info("target output", "text", string(d.Data))
			default:
				lg.Debug("target packet ignored", "packet", p.String())
			}
		}
	}
}
