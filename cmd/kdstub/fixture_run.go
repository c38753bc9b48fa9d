package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/qemuqmp/qmp"
)

func fixtureRunCommand() *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "run a built guest under QEMU (TCG) in the foreground until SIGINT/SIGTERM",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Required: true, Usage: "guest directory written by fixture build"},
			&cli.StringFlag{Name: "qmp", Usage: "QMP socket, unix:PATH (default unix:DIR/qmp.sock)"},
			&cli.StringFlag{Name: "gdb", Usage: "gdbstub socket, unix:PATH (default unix:DIR/gdb.sock)"},
			&cli.StringFlag{Name: "ram-file", Usage: "back guest RAM with a shared file at PATH (e.g. /dev/shm/guest.ram)"},
			&cli.StringFlag{Name: "record", Usage: "record execution to FILE (record/replay needs a 1-CPU guest)"},
			&cli.StringFlag{Name: "replay", Usage: "replay execution from FILE"},
			&cli.BoolFlag{Name: "paused", Usage: "start with the vCPUs stopped"},
		},
		Action: fixtureRun,
	}
}

func fixtureRun(c *cli.Context) error {
	lg := logger(c)
	g, err := winguest.LoadGuest(c.String("dir"))
	if err != nil {
		return fmt.Errorf("fixture run: %w", err)
	}
	if c.IsSet("record") && c.IsSet("replay") {
		return errors.New("fixture run: --record and --replay exclude each other")
	}
	// QEMU's sockets go to a short private directory (unix socket paths are limited to 108 bytes).
	runDir, err := os.MkdirTemp("", "kdstub-fixture-")
	if err != nil {
		return fmt.Errorf("fixture run: %w", err)
	}
	defer os.RemoveAll(runDir)
	cfg := qemuqmp.LaunchConfig{
		Dir: runDir, Kernel: g.ELF, MemoryMB: int(g.RAMSize >> 20), SMP: len(g.CPUs), Paused: c.Bool("paused"),
		SharedRAM: c.String("ram-file"), Disk: g.DiskImage, Stderr: os.Stderr, Logger: lg,
	}
	switch {
	case c.IsSet("record"):
		cfg.RRMode, cfg.RRFile = "record", c.String("record")
	case c.IsSet("replay"):
		cfg.RRMode, cfg.RRFile = "replay", c.String("replay")
	}
	// The sockets live in a private run directory; the requested endpoints are symlinks to them (connect(2)
	// follows symlinks), because qemuqmp.LaunchConfig names its sockets itself.
	qmpPath, err := socketPath(c.String("qmp"), filepath.Join(g.Dir, "qmp.sock"))
	if err != nil {
		return err
	}
	gdbPath, err := socketPath(c.String("gdb"), filepath.Join(g.Dir, "gdb.sock"))
	if err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(c.Context, 20*time.Second)
	p, err := qemuqmp.Start(startCtx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("fixture run: %w", err)
	}
	defer p.Kill()
	for _, l := range [][2]string{{p.QMPSocket, qmpPath}, {p.GDBSocket, gdbPath}} {
		if err := os.Remove(l[1]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("fixture run: replace %s: %w", l[1], err)
		}
		if err := os.Symlink(l[0], l[1]); err != nil {
			return fmt.Errorf("fixture run: %w", err)
		}
		defer os.Remove(l[1])
	}
	w := c.App.Writer
	fmt.Fprintf(w, "qmp=unix:%s\ngdb=unix:%s\n", qmpPath, gdbPath)
	if cfg.SharedRAM != "" {
		fmt.Fprintf(w, "ram-file=%s\n", cfg.SharedRAM)
	}
	fmt.Fprintf(w, "manifest=%s\npid=%d\n", filepath.Join(g.Dir, winguest.ManifestFile), p.Pid())
	lg.Info("guest running", "dir", g.Dir, "pid", p.Pid(), "cpus", len(g.CPUs))

	select {
	case <-p.Exited():
		return fmt.Errorf("fixture run: qemu exited: %v", p.Wait(context.Background()))
	case <-c.Context.Done():
	}
	lg.Info("stopping qemu")
	quitQEMU(p, lg)
	if cfg.SharedRAM != "" {
		os.Remove(cfg.SharedRAM) // QEMU never deletes its memory-backend file
	}
	return nil
}

// quitQEMU shuts QEMU down cleanly — a QMP quit, or SIGTERM when QMP is unavailable (another client may hold
// its single connection) or the quit is not honoured in time — so that a --record log gets its header, and
// kills it only as a last resort.
func quitQEMU(p *qemuqmp.Process, lg interface{ Warn(string, ...any) }) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if cl, err := qmp.Dial(ctx, "unix:"+p.QMPSocket, nil); err == nil {
		err = cl.Quit(ctx)
		cl.Close()
		if err == nil {
			select {
			case <-p.Exited():
				return
			case <-time.After(5 * time.Second):
			}
		} else {
			lg.Warn("qmp quit failed", "err", err)
		}
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer tcancel()
	if err := p.Terminate(tctx); err != nil {
		lg.Warn("qemu did not quit; killing it", "err", err)
		p.Kill()
	}
}

// socketPath turns "unix:PATH" (or a bare path) into a path, defaulting to def.
func socketPath(flag, def string) (string, error) {
	if flag == "" {
		return def, nil
	}
	if rest, ok := strings.CutPrefix(flag, "unix:"); ok {
		return rest, nil
	}
	if strings.Contains(flag, ":") {
		return "", fmt.Errorf("fixture run: socket %q: only unix:PATH is supported", flag)
	}
	return flag, nil
}
