package target

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"

	"github.com/kdstub/kdstub/windows/discover"
	"github.com/kdstub/kdstub/windows/machine"
)

// FromDiscovery converts what windows/discover established into the facts the target serves from.
func FromDiscovery(d *discover.Kernel) (*Kernel, error) {
	if d == nil {
		return nil, errors.New("no discovery result")
	}
	k := &Kernel{
		Build: uint16(d.Build), KernBase: d.Base, PsLoadedModuleList: d.PsLoadedModuleList,
		DebuggerDataList: d.KdpDebuggerDataListHead, KernelCR3: d.DTB,
		KDBG: d.KDBG, KDBGPlain: append([]byte(nil), d.KDBGPlaintext...),
		KdpDataBlockEncoded: d.KdpDataBlockEncoded,
	}
	if k.DebuggerDataList == 0 && len(k.KDBGPlain) >= 8 {
		// The KDBG's List.Flink/Blink point at the list head when it is the only entry.
		k.DebuggerDataList = binary.LittleEndian.Uint64(k.KDBGPlain[8:])
	}
	if len(d.CPUs) > 0 {
		k.KPCR = make([]uint64, 0, len(d.CPUs))
		for _, c := range d.CPUs {
			for len(k.KPCR) <= c.Index && c.Index < 1024 {
				k.KPCR = append(k.KPCR, 0)
			}
			if c.Index >= 0 && c.Index < len(k.KPCR) {
				k.KPCR[c.Index] = c.KPCR
			}
		}
	}
	return k, k.validate()
}

// LiveDiscoverer discovers the kernel from a machine's memory and CPU state (windows/discover.FromCPUs).
type LiveDiscoverer struct {
	Phys   machine.PhysicalMemory
	CPUs   machine.CPUState
	Logger *slog.Logger
}

// Discover implements Discoverer.
func (l LiveDiscoverer) Discover(ctx context.Context) (*Kernel, error) {
	lg := l.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	d, err := discover.FromCPUs(ctx, lg, l.Phys, l.CPUs)
	if err != nil {
		return nil, err
	}
	return FromDiscovery(d)
}
