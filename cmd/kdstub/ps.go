package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/windows/objects"
)

// psProcess is one row of `kdstub ps`.
type psProcess struct {
	objects.Process
	Threads []objects.Thread `json:"threads,omitempty"`
}

// psCommand lists the guest's processes.
func psCommand() *cli.Command {
	return &cli.Command{
		Name:  "ps",
		Usage: "list the guest's processes (from PsActiveProcessHead)",
		Flags: append(sourceFlags(), &cli.BoolFlag{Name: "threads", Usage: "also list each process's threads"}),
		Action: func(c *cli.Context) error {
			g, err := openGuest(c)
			if err != nil {
				return fmt.Errorf("ps: %w", err)
			}
			defer g.close()
			k := g.kernel
			if k.Offsets == nil || k.PsActiveProcessHead == 0 {
				return fmt.Errorf("ps: process list unavailable: %v", k.Warnings)
			}
			procs, err := objects.Processes(c.Context, k.Space, k.PsActiveProcessHead, k.Offsets)
			if err != nil && g.triage != nil && g.triage.Process.Present() {
				// A triage dump keeps only the crashing thread's process.
				var p objects.Process
				if p, err = objects.ReadProcess(c.Context, k.Space, g.triage.Process.VA, k.Offsets); err == nil {
					procs = []objects.Process{p}
				}
			}
			if err != nil && len(procs) == 0 {
				return fmt.Errorf("ps: %w", err)
			}
			if err != nil {
				logger(c).Warn("process list incomplete", "err", err)
			}
			rows := make([]psProcess, len(procs))
			for i, p := range procs {
				rows[i].Process = p
				if c.Bool("threads") || c.Bool("json") {
					rows[i].Threads, _ = objects.Threads(c.Context, k.Space, p.EPROCESS, k.Offsets)
				}
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, rows)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "PID\tPPID\tNAME\tEPROCESS\tDTB\tPEB\tCREATED")
			for _, r := range rows {
				created := ""
				if !r.CreateTime.IsZero() {
					created = r.CreateTime.Format("2006-01-02 15:04:05")
				}
				fmt.Fprintf(tw, "%d\t%d\t%s\t%#x\t%#x\t%#x\t%s\n", r.PID, r.PPID, r.Name, r.EPROCESS, r.DTB, r.PEB, created)
				for _, t := range r.Threads {
					state := fmt.Sprint(t.State)
					if int(t.State) < len(objects.ThreadStates) {
						state = objects.ThreadStates[t.State]
					}
					fmt.Fprintf(tw, "\t\t  thread %d\t%#x\tTEB %#x\tcpu %d\t%s\n", t.TID, t.KTHREAD, t.TEB, t.CPU, state)
				}
			}
			return tw.Flush()
		},
	}
}
