package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/fixtures/winguest"
)

func fixtureBuildCommand() *cli.Command {
	return &cli.Command{
		Name:  "build",
		Usage: "generate a guest directory (guest.elf, ram.img, cpus.json, manifest.json, disk.img)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Required: true, Usage: "output directory"},
			&cli.IntFlag{Name: "build", Value: 19041, Usage: "Windows build whose structure layout to use: 19041, 22000, 18362, 17763"},
			&cli.Int64Flag{Name: "seed", Value: 1, Usage: "generator seed (same seed, same bytes)"},
			&cli.IntFlag{Name: "cpus", Value: 1, Usage: "number of vCPUs, 1..4"},
			&cli.IntFlag{Name: "processes", Value: 0, Usage: "extra processes beyond the fixed set"},
			&cli.StringFlag{Name: "kdbg", Value: "encoded", Usage: "encoded (as Windows 8+ without /debug) or plain"},
			&cli.BoolFlag{Name: "no-disk", Usage: "skip the NTFS disk image"},
		},
		Action: func(c *cli.Context) error {
			g, err := winguest.BuildWithLogger(c.Context, winguest.Options{
				Build: c.Int("build"), Seed: c.Int64("seed"), CPUs: c.Int("cpus"), Processes: c.Int("processes"),
				KDBG: c.String("kdbg"), Out: c.String("out"), NoDisk: c.Bool("no-disk"),
			}, logger(c))
			if err != nil {
				return fmt.Errorf("fixture build: %w", err)
			}
			m := g.Manifest
			fmt.Fprintf(c.App.Writer, "dir=%s\nbuild=%d\nkernel-base=%#x\nkdbg=%#x encoded=%v\ncpus=%d\nprocesses=%d\n",
				g.Dir, m.Build, uint64(m.KernelBase), uint64(m.KDBG.Address), m.KDBG.Encoded, len(m.CPUs), len(m.Processes))
			return nil
		},
	}
}
