package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/windows/machine"
	"github.com/kdstub/kdstub/windows/objects"
	"github.com/kdstub/kdstub/windows/pe"
)

// lmModule is one row of `kdstub lm`.
type lmModule struct {
	objects.Module
	PDB string `json:"pdb,omitempty"` // symbol-server key from the in-memory RSDS record
}

// lmCommand lists kernel modules, or one process's user modules with --pid.
func lmCommand() *cli.Command {
	return &cli.Command{
		Name:  "lm",
		Usage: "list kernel modules (PsLoadedModuleList), or a process's modules with --pid",
		Flags: append(sourceFlags(), &cli.Uint64Flag{Name: "pid", Usage: "list this process's user-mode modules"}),
		Action: func(c *cli.Context) error {
			g, err := openGuest(c)
			if err != nil {
				return fmt.Errorf("lm: %w", err)
			}
			defer g.close()
			mods, err := listModules(c, g)
			if err != nil && len(mods) == 0 {
				return fmt.Errorf("lm: %w", err)
			}
			if err != nil {
				logger(c).Warn("module list incomplete", "err", err)
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, mods)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "BASE\tSIZE\tNAME\tTIMESTAMP\tPDB\tPATH")
			for _, m := range mods {
				fmt.Fprintf(tw, "%#x\t%#x\t%s\t%08x\t%s\t%s\n", m.Base, m.Size, m.Name, m.TimeDateStamp, m.PDB, m.FullName)
			}
			return tw.Flush()
		},
	}
}

func listModules(c *cli.Context, g *guest) ([]lmModule, error) {
	ctx := c.Context
	k := g.kernel
	var mods []objects.Module
	var err error
	var space machine.VirtualMemory = k.Space
	if c.IsSet("pid") {
		if k.Offsets == nil {
			return nil, fmt.Errorf("process offsets unknown: %v", k.Warnings)
		}
		procs, perr := objects.Processes(ctx, k.Space, k.PsActiveProcessHead, k.Offsets)
		var proc *objects.Process
		for i := range procs {
			if procs[i].PID == c.Uint64("pid") {
				proc = &procs[i]
			}
		}
		if proc == nil {
			return nil, fmt.Errorf("no process with pid %d (%v)", c.Uint64("pid"), perr)
		}
		if k.Paging == nil {
			return nil, fmt.Errorf("per-process modules need physical memory; %s has none", "this source")
		}
		space = k.Paging.WithDTB(proc.DTB)
		mods, err = objects.UserModules(ctx, space, proc.PEB, proc.Wow64PEB)
	} else if g.triage != nil {
		// A triage dump holds the driver list as a copy, not the linked list.
		for _, d := range g.triage.Drivers {
			mods = append(mods, objects.Module{Base: d.DllBase, Size: d.SizeOfImage, Name: baseName(d.Name),
				FullName: d.Name, TimeDateStamp: d.TimeDateStamp})
		}
	} else {
		mods, err = objects.KernelModules(ctx, k.Space, k.PsLoadedModuleList)
	}
	out := make([]lmModule, len(mods))
	for i, m := range mods {
		out[i].Module = m
		if im, err := pe.Open(ctx, space, m.Base); err == nil {
			if cv, err := im.CodeView(ctx); err == nil {
				out[i].PDB = cv.SymbolKey()
			}
		}
	}
	return out, err
}

func baseName(path string) string {
	if i := strings.LastIndexAny(path, `\/`); i >= 0 {
		return path[i+1:]
	}
	return path
}
