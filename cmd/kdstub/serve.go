package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/windows/target"
	"github.com/kdstub/kdstub/windows/target/qemumachine"
)

// serveCommand plays the KD target toward WinDbg for a QEMU guest that was not booted in debug mode.
func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "act as a debug-mode Windows kernel toward WinDbg (KDNET or KD serial) for a QEMU guest",
		Description: "Connects to QEMU's QMP and gdbstub, and serves one transport. Connecting the gdbstub stops a " +
			"running guest (QEMU behaviour); serve resumes it at once, so the guest runs until the debugger breaks in. " +
			"The kernel is discovered at the first break-in. Give --serial, one of --kdnet/--kdnet-listen, or both: " +
			"one debugger is served at a time (a second serial debugger is refused, a KDNET one waits). When QEMU goes " +
			"away, serve reconnects to the same --qmp/--gdb endpoints with backoff and rediscovers the kernel; the KD " +
			"session goes on (--exit-on-gone restores exiting).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "qmp", Required: true, Usage: "QMP endpoint: unix:PATH or tcp:HOST:PORT"},
			&cli.StringFlag{Name: "gdb", Required: true, Usage: "gdbstub endpoint: unix:PATH or tcp:HOST:PORT"},
			&cli.StringFlag{Name: "ram-file", Usage: "QEMU's share=on memory-backend-file, for fast guest memory reads"},
			&cli.StringFlag{Name: "kdnet", Usage: "classic KDNET: poke the debugger at HOSTIP:PORT (bcdedit hostip/port)"},
			&cli.StringFlag{Name: "kdnet-source", Usage: "classic KDNET: local ADDR:PORT to send from (default: loopback, ephemeral port, or 0.0.0.0:PORT for a remote host)"},
			&cli.StringFlag{Name: "kdnet-listen", Usage: "KDNET target= mode: listen on ADDR:PORT for a debugger's connect requests"},
			&cli.StringFlag{Name: "key", Usage: "KDNET key w.x.y.z (base 36); generated and printed when omitted"},
			&cli.StringFlag{Name: "serial", Usage: "KD serial listener: tcp-listen:ADDR:PORT (WinDbg com:ipport=) or unix-listen:PATH"},
			&cli.BoolFlag{Name: "no-resume", Usage: "leave the guest stopped after connecting (and after reconnecting)"},
			&cli.BoolFlag{Name: "exit-on-gone", Usage: "exit when QEMU goes away instead of reconnecting to the same endpoints"},
		},
		Action: serveAction,
	}
}

func serveAction(c *cli.Context) error {
	lg := logger(c)
	specs, err := parseServeTransports(c)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	scratch, err := os.MkdirTemp("", "kdstub-serve-")
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer os.RemoveAll(scratch)
	connect := func(ctx context.Context) (*qemuqmp.Machine, error) {
		return qemuqmp.Connect(ctx, qemuqmp.Config{
			QMP: c.String("qmp"), GDB: c.String("gdb"), SharedRAM: c.String("ram-file"), ScratchDir: scratch,
			Logger: lg.With("layer", "qemu"),
		})
	}
	resume := !c.Bool("no-resume")
	var (
		mach    target.Machine
		cpus    func() int
		running func() bool
		resumeM func(context.Context) error
	)
	if c.Bool("exit-on-gone") {
		m, err := connect(ctx)
		if err != nil {
			return fmt.Errorf("serve: connect to qemu: %w", err)
		}
		defer m.Close()
		mach, cpus, running, resumeM = qemumachine.New(m), m.CPUCount, m.Running, m.Continue
	} else {
		// The reconnecting machine lives until serve ends; its context ends before it is closed.
		rctx, cancel := context.WithCancel(ctx)
		r, err := qemumachine.NewReconnecting(rctx, connect, resume, lg.With("layer", "qemu"))
		if err != nil {
			cancel()
			return fmt.Errorf("serve: connect to qemu: %w", err)
		}
		defer func() {
			cancel()
			r.Close()
		}()
		mach, cpus, running, resumeM = r, r.CPUCount, r.Running, r.Continue
	}
	t, err := newServeTarget(ctx, mach, lg)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if resume && !running() {
		if err := resumeM(ctx); err != nil {
			return fmt.Errorf("serve: resume the guest: %w", err)
		}
	}
	for _, s := range specs {
		lg.Info("serving", "transport", s.describe(), "cpus", cpus())
	}
	err = serveAll(ctx, lg, c.App.Writer, &kdproto.Server{Target: t, Logger: lg.With("layer", "kd")}, specs)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// newServeTarget builds the Windows KD target over a live QEMU machine, discovering the kernel lazily (and
// again after a guest reset or a QEMU restart).
func newServeTarget(ctx context.Context, m target.Machine, lg *slog.Logger) (*target.Target, error) {
	return target.New(ctx, target.Config{
		Machine:    m,
		Discoverer: target.LiveDiscoverer{Phys: m, CPUs: m, Logger: lg.With("layer", "discover")},
		Logger:     lg.With("layer", "target"),
	})
}
