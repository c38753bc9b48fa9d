package ram

import (
	"context"
	"errors"
	"fmt"

	"github.com/kdstub/kdstub/qemuqmp/qmp"
)

// DefaultBulkThreshold is where pmemsave's fixed ~0.5 ms round trip beats pipelined gdbstub reads (~25-60 µs
// per 2 KiB) on the measured host.
const DefaultBulkThreshold = 64 << 10

// Auto routes each request to the fastest backend that can serve it: the shared file when the range is RAM
// in it, pmemsave for big reads, and the gdbstub for the rest (ROM, MMIO and writes outside the file).
type Auto struct {
	Shared        *Shared // optional
	Bulk          Backend // optional, read-only (pmemsave)
	Small         Backend // required (gdbstub, physical mode)
	BulkThreshold int     // 0 means DefaultBulkThreshold
	// SmallUnavailable, when set, reports whether the small backend currently cannot serve (the gdbstub
	// refuses while the VM runs); reads then go to Bulk regardless of size.
	SmallUnavailable func() bool
}

// ReadPhysical implements Backend.
func (a *Auto) ReadPhysical(ctx context.Context, pa uint64, buf []byte) error {
	if a.Shared != nil {
		err := a.Shared.ReadPhysical(ctx, pa, buf)
		if err == nil || !errors.Is(err, ErrNotBacked) {
			return err
		}
	}
	th := a.BulkThreshold
	if th == 0 {
		th = DefaultBulkThreshold
	}
	if a.Bulk != nil && (len(buf) >= th || (a.SmallUnavailable != nil && a.SmallUnavailable())) {
		return a.Bulk.ReadPhysical(ctx, pa, buf)
	}
	if a.Small == nil {
		return fmt.Errorf("read %d bytes at PA %#x: no backend", len(buf), pa)
	}
	return a.Small.ReadPhysical(ctx, pa, buf)
}

// WritePhysical implements Backend.
func (a *Auto) WritePhysical(ctx context.Context, pa uint64, buf []byte) error {
	if a.Shared != nil {
		err := a.Shared.WritePhysical(ctx, pa, buf)
		if err == nil || !errors.Is(err, ErrNotBacked) {
			return err
		}
	}
	if a.Small == nil {
		return fmt.Errorf("write %d bytes at PA %#x: no backend", len(buf), pa)
	}
	return a.Small.WritePhysical(ctx, pa, buf)
}

// Legacy window whose routing the firmware changes at run time (PAM shadowing of the BIOS, SMRAM, VGA): a map
// read before boot would be wrong after it, so it is never served from the file.
const (
	legacyStart = 0xA0000
	legacyEnd   = 0x100000
)

// MappingsFor builds the shared-file translation from "info mtree -f" regions: every ram range whose memory
// region is the RAM block (its @offset is the offset in the file), minus the legacy 640K-1M window.
func MappingsFor(regions []qmp.Region, block string) []Mapping {
	var out []Mapping
	add := func(start, end, off uint64) {
		if end > start {
			out = append(out, Mapping{Start: start, End: end, Offset: off})
		}
	}
	for _, r := range regions {
		if r.Name != block || r.Kind != "ram" || r.End <= r.Start {
			continue
		}
		if r.End <= legacyStart || r.Start >= legacyEnd {
			add(r.Start, r.End, r.Offset)
			continue
		}
		add(r.Start, min(r.End, legacyStart), r.Offset)
		if r.End > legacyEnd {
			add(legacyEnd, r.End, r.Offset+(legacyEnd-r.Start))
		}
	}
	return out
}
