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
			"The kernel is discovered at the first break-in. Exactly one of --kdnet, --kdnet-listen or --serial is required.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "qmp", Required: true, Usage: "QMP endpoint: unix:PATH or tcp:HOST:PORT"},
			&cli.StringFlag{Name: "gdb", Required: true, Usage: "gdbstub endpoint: unix:PATH or tcp:HOST:PORT"},
			&cli.StringFlag{Name: "ram-file", Usage: "QEMU's share=on memory-backend-file, for fast guest memory reads"},
			&cli.StringFlag{Name: "kdnet", Usage: "classic KDNET: poke the debugger at HOSTIP:PORT (bcdedit hostip/port)"},
			&cli.StringFlag{Name: "kdnet-source", Usage: "classic KDNET: local ADDR:PORT to send from (default: loopback, ephemeral port, or 0.0.0.0:PORT for a remote host)"},
			&cli.StringFlag{Name: "kdnet-listen", Usage: "KDNET target= mode: listen on ADDR:PORT for a debugger's connect requests"},
			&cli.StringFlag{Name: "key", Usage: "KDNET key w.x.y.z (base 36); generated and printed when omitted"},
			&cli.StringFlag{Name: "serial", Usage: "KD serial listener: tcp-listen:ADDR:PORT (WinDbg com:ipport=) or unix-listen:PATH"},
			&cli.BoolFlag{Name: "no-resume", Usage: "leave the guest stopped after connecting"},
		},
		Action: serveAction,
	}
}

func serveAction(c *cli.Context) error {
	lg := logger(c)
	spec, err := parseServeTransport(c)
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
	m, err := qemuqmp.Connect(ctx, qemuqmp.Config{
		QMP: c.String("qmp"), GDB: c.String("gdb"), SharedRAM: c.String("ram-file"), ScratchDir: scratch,
		Logger: lg.With("layer", "qemu"),
	})
	if err != nil {
		return fmt.Errorf("serve: connect to qemu: %w", err)
	}
	defer m.Close()
	t, err := newServeTarget(ctx, m, lg)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if !c.Bool("no-resume") && !m.Running() {
		if err := m.Continue(ctx); err != nil {
			return fmt.Errorf("serve: resume the guest: %w", err)
		}
	}
	lg.Info("serving", "transport", spec.describe(), "cpus", m.CPUCount())
	err = spec.serve(ctx, lg, c.App.Writer, &kdproto.Server{Target: t, Logger: lg.With("layer", "kd")})
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// newServeTarget builds the Windows KD target over a live QEMU machine, discovering the kernel lazily.
func newServeTarget(ctx context.Context, m *qemuqmp.Machine, lg *slog.Logger) (*target.Target, error) {
	return target.New(ctx, target.Config{
		Machine:    qemumachine.New(m),
		Discoverer: target.LiveDiscoverer{Phys: m, CPUs: m, Logger: lg.With("layer", "discover")},
		Logger:     lg.With("layer", "target"),
	})
}
