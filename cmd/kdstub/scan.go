package main

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/windows/discover"
)

// scanCommand discovers the kernel and prints every fact with the method that established it.
func scanCommand() *cli.Command {
	return &cli.Command{
		Name:  "scan",
		Usage: "find the Windows kernel, KdVersionBlock, the (decoded) KDBG and per-CPU objects",
		Flags: sourceFlags(),
		Action: func(c *cli.Context) error {
			g, err := openGuest(c)
			if err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			defer g.close()
			if c.Bool("json") {
				return printJSON(c.App.Writer, g.kernel)
			}
			return printScan(c.App.Writer, g)
		},
	}
}

func printScan(w io.Writer, g *guest) error {
	k := g.kernel
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name string, value any, fact string) {
		fmt.Fprintf(tw, "%s\t%v\t%s\n", name, value, k.Methods[fact])
	}
	hex := func(v uint64) string { return fmt.Sprintf("%#x", v) }
	fmt.Fprintf(tw, "source\t%s\t\n", g.source)
	row("kernel DTB", hex(k.DTB), "DTB")
	row("kernel base", hex(k.Base), "Base")
	fmt.Fprintf(tw, "kernel size\t%#x\t\n", k.Size)
	row("build", fmt.Sprintf("%d (NtBuildNumber %#x)", k.Build, k.NtBuildNumber), "NtBuildNumber")
	if k.BuildLab != "" {
		fmt.Fprintf(tw, "build lab\t%s\t\n", k.BuildLab)
	}
	if k.PDBKey != "" {
		fmt.Fprintf(tw, "PDB\t%s\t\n", k.PDBKey)
	}
	if k.PsNtosImageBase != 0 {
		row("PsNtosImageBase", hex(k.PsNtosImageBase), "PsNtosImageBase")
	}
	if k.KdVersionBlock != 0 {
		row("KdVersionBlock", hex(k.KdVersionBlock), "KdVersionBlock")
	}
	row("KDBG", fmt.Sprintf("%#x (size %#x, encoded %v)", k.KDBG, len(k.KDBGPlaintext), k.KDBGEncoded), "KDBG")
	if k.KdpDataBlockEncoded != 0 {
		row("KdpDataBlockEncoded", hex(k.KdpDataBlockEncoded), "KdCopyDataBlock")
		row("KiWaitNever / Always", hex(k.KiWaitNever)+" / "+hex(k.KiWaitAlways), "KdCopyDataBlock")
	}
	row("PsLoadedModuleList", hex(k.PsLoadedModuleList), "PsLoadedModuleList")
	row("PsActiveProcessHead", hex(k.PsActiveProcessHead), "PsActiveProcessHead")
	row("PsInitialSystemProcess", hex(k.PsInitialSystemProcess), "PsInitialSystemProcess")
	row("KiProcessorBlock", hex(k.KiProcessorBlock), "KiProcessorBlock")
	if k.PteBase != 0 {
		fmt.Fprintf(tw, "PteBase\t%#x\tKDBG\n", k.PteBase)
	}
	for _, c := range k.CPUs {
		fmt.Fprintf(tw, "cpu %d\tKPCR %#x KPRCB %#x thread %#x\t%s\n", c.Index, c.KPCR, c.KPRCB, c.CurrentThread, k.Methods["CPUs"])
	}
	printOffsets(tw, k)
	for _, warn := range k.Warnings {
		fmt.Fprintf(tw, "warning\t%s\t\n", warn)
	}
	return tw.Flush()
}

func printOffsets(tw *tabwriter.Writer, k *discover.Kernel) {
	if k.Offsets == nil {
		return
	}
	names := make([]string, 0, len(k.Offsets.Methods))
	for n := range k.Offsets.Methods {
		names = append(names, n)
	}
	sort.Strings(names)
	vals := offsetValues(k)
	for _, n := range names {
		fmt.Fprintf(tw, "offset %s\t%#x\t%s\n", n, vals[n], k.Offsets.Methods[n])
	}
}

func offsetValues(k *discover.Kernel) map[string]uint32 {
	o := k.Offsets
	return map[string]uint32{
		"directoryTableBase": o.DirectoryTableBase, "kprocessThreadListHead": o.KProcessThreadListHead,
		"uniqueProcessId": o.UniqueProcessID, "activeProcessLinks": o.ActiveProcessLinks, "imageFileName": o.ImageFileName,
		"peb": o.Peb, "inheritedFromUniqueProcessId": o.ParentPID, "createTime": o.CreateTime,
		"userDirectoryTableBase": o.UserDirectoryTableBase, "wow64Process": o.Wow64Process, "sizeEProcess": o.SizeEProcess,
		"kthreadThreadListEntry": o.KThreadThreadListEntry, "kthreadTeb": o.KThreadTeb, "kthreadState": o.KThreadState,
		"kthreadApcProcess": o.KThreadApcProcess, "kthreadNextProcessor": o.KThreadNextProcessor, "ethreadCid": o.EThreadCid,
		"pcrPrcb": o.PcrPrcb, "prcbCurrentThread": o.PrcbCurrentThread, "prcbNumber": o.PrcbNumber,
	}
}
