package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/qemuqmp"
	"github.com/kdstub/kdstub/windows/discover"
	"github.com/kdstub/kdstub/windows/dump"
	"github.com/kdstub/kdstub/windows/machine"
)

// sourceFlags are the flags scan, ps and lm share: where the guest's memory and registers come from.
func sourceFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "qmp", Usage: "QMP socket of a live QEMU (unix:/path, tcp:host:port or a path)"},
		&cli.StringFlag{Name: "gdb", Usage: "gdbstub socket of the same QEMU"},
		&cli.StringFlag{Name: "ram-file", Usage: "mem-path of QEMU's share=on memory-backend-file (fast RAM reads)"},
		&cli.StringFlag{Name: "memory", Usage: "raw physical memory image or crash dump (PAGEDU64) instead of a live QEMU"},
		&cli.StringFlag{Name: "cpus", Usage: "register state JSON for --memory (as the fixture writes cpus.json)"},
		&cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"},
	}
}

// guest is an opened source with the kernel discovered in it.
type guest struct {
	kernel *discover.Kernel
	source string
	close  func()
	triage *dump.Triage // set for triage dumps, whose lists are not in the dump; their copies stand in
}

// openGuest opens the source the flags name and runs discovery.
func openGuest(c *cli.Context) (*guest, error) {
	ctx := c.Context
	lg := logger(c)
	switch {
	case c.String("memory") != "":
		return openMemoryFile(ctx, lg, c.String("memory"), c.String("cpus"))
	case c.String("qmp") != "" && c.String("gdb") != "":
		return openLive(ctx, lg, c.String("qmp"), c.String("gdb"), c.String("ram-file"))
	}
	return nil, errors.New("give --memory FILE, or --qmp and --gdb of a live QEMU")
}

func openLive(ctx context.Context, lg *slog.Logger, qmpAddr, gdbAddr, ramFile string) (*guest, error) {
	m, err := qemuqmp.Connect(ctx, qemuqmp.Config{QMP: qmpAddr, GDB: gdbAddr, SharedRAM: ramFile, Logger: lg})
	if err != nil {
		return nil, fmt.Errorf("connect to QEMU: %w", err)
	}
	wasRunning := m.Running()
	if wasRunning {
		// Registers and a consistent view of the lists need a stopped VM; it is resumed when we are done.
		if err := m.Stop(ctx); err != nil {
			m.Close()
			return nil, fmt.Errorf("stop the VM: %w", err)
		}
	}
	done := func() {
		if wasRunning {
			if err := m.Continue(context.Background()); err != nil {
				lg.Warn("resume the VM", "err", err)
			}
		}
		m.Close()
	}
	k, err := discover.FromCPUs(ctx, lg, m, m)
	if err != nil {
		done()
		return nil, err
	}
	return &guest{kernel: k, source: "live QEMU " + qmpAddr, close: done}, nil
}

func openMemoryFile(ctx context.Context, lg *slog.Logger, path, cpusPath string) (*guest, error) {
	var magic [8]byte
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open memory file: %w", err)
	}
	_, _ = io.ReadFull(f, magic[:])
	f.Close()
	if string(magic[:]) == "PAGEDU64" {
		return openDump(ctx, lg, path)
	}
	img, err := machine.OpenRawImage(path)
	if err != nil {
		return nil, err
	}
	g := &guest{source: "raw image " + path, close: func() { img.Close() }}
	if cpusPath != "" {
		raw, err := os.ReadFile(cpusPath)
		if err != nil {
			img.Close()
			return nil, fmt.Errorf("read register state: %w", err)
		}
		var cpus []amd64.Registers
		if err := json.Unmarshal(raw, &cpus); err != nil {
			img.Close()
			return nil, fmt.Errorf("parse register state %s: %w", cpusPath, err)
		}
		g.kernel, err = discover.FromCPUs(ctx, lg, img, machine.StaticCPUs(cpus))
		if err != nil {
			img.Close()
			return nil, err
		}
		return g, nil
	}
	bar := newProgressBar(os.Stderr, "scanning physical memory")
	g.kernel, err = discover.FromPhysical(ctx, lg, img, img.Size(), bar.update)
	bar.finish()
	if err != nil {
		img.Close()
		return nil, err
	}
	return g, nil
}

func openDump(ctx context.Context, lg *slog.Logger, path string) (*guest, error) {
	d, err := dump.Open(path)
	if err != nil {
		return nil, err
	}
	if d.Header().DumpType == dump.TypeTriage {
		tri, err := d.Triage()
		if err != nil {
			d.Close()
			return nil, err
		}
		k, err := discover.FromTriage(ctx, lg, d)
		if err != nil {
			d.Close()
			return nil, err
		}
		return &guest{kernel: k, source: "triage dump " + path, close: func() { d.Close() }, triage: tri}, nil
	}
	if !d.HasPhysical() {
		d.Close()
		return nil, fmt.Errorf("%s is a %s dump without physical memory", path, d.Header().DumpType)
	}
	k, err := discover.FromDTB(ctx, lg, d, d.Header().DTB, "crash dump header DirectoryTableBase")
	if err != nil {
		d.Close()
		return nil, err
	}
	return &guest{kernel: k, source: "crash dump " + path, close: func() { d.Close() }}, nil
}

// progressBar draws a one-line bar on a terminal; on anything else it stays silent.
type progressBar struct {
	w     io.Writer
	label string
	on    bool
	last  int
}

func newProgressBar(f *os.File, label string) *progressBar {
	st, err := f.Stat()
	return &progressBar{w: f, label: label, on: err == nil && st.Mode()&os.ModeCharDevice != 0, last: -1}
}

func (p *progressBar) update(done, total uint64) {
	if !p.on || total == 0 {
		return
	}
	pct := int(done * 100 / total)
	if pct == p.last {
		return
	}
	p.last = pct
	n := pct / 4
	fmt.Fprintf(p.w, "\r%s [%s%s] %3d%%", p.label, strings.Repeat("#", n), strings.Repeat(" ", 25-n), pct)
}

func (p *progressBar) finish() {
	if p.on && p.last >= 0 {
		fmt.Fprintln(p.w)
	}
}
