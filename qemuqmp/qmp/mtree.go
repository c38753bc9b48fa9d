package qmp

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// Region is one range of the flattened system address space from "info mtree -f".
type Region struct {
	Start, End uint64 // guest-physical, End exclusive
	Prio       int
	Kind       string // "ram", "rom", "i/o", "romd", …
	Name       string // memory region name: "pc.ram", the memory-backend id ("mem"), "pc.bios", "ioapic", …
	Offset     uint64 // offset into the memory region (and so into its RAM block / backend file)
}

// Size is End-Start.
func (r Region) Size() uint64 { return r.End - r.Start }

// maxRegions bounds the parse; a real pc machine has about 10 regions in AS "memory".
const maxRegions = 1 << 14

// ParseMemoryMap extracts the flat view of AS "memory" from "info mtree -f" output.
//
// Lines look like "  0000000100000000-000000017fffffff (prio 0, ram): pc.ram @00000000c0000000"; the @offset is
// absent when it is zero. Other flat views (I/O ports, SMM, bus masters) are skipped.
func ParseMemoryMap(text string) ([]Region, error) {
	var out []Region
	inView, found := false, false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 0; sc.Scan(); n++ {
		if n > maxHMPLines*4 {
			return nil, fmt.Errorf("more than %d lines: %w", maxHMPLines*4, ErrBadHMP)
		}
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FlatView #"):
			if found && len(out) > 0 {
				return out, nil
			}
			inView = false
			continue
		case strings.HasPrefix(line, `AS "memory"`):
			inView, found = true, true
			continue
		case !inView || line == "" || strings.HasPrefix(line, "AS ") || strings.HasPrefix(line, "Root memory region") ||
			strings.HasPrefix(line, "No rendered FlatView"):
			continue
		}
		r, err := parseRegionLine(line)
		if err != nil {
			return nil, err
		}
		if len(out) >= maxRegions {
			return nil, fmt.Errorf("more than %d regions: %w", maxRegions, ErrBadHMP)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrBadHMP)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no flat view for AS \"memory\": %w", ErrBadHMP)
	}
	return out, nil
}

func parseRegionLine(line string) (Region, error) {
	bad := func(why string) (Region, error) {
		return Region{}, fmt.Errorf("region line %q: %s: %w", short([]byte(line)), why, ErrBadHMP)
	}
	rng, rest, ok := strings.Cut(line, " (prio ")
	if !ok {
		return bad("no prio")
	}
	lo, hi, ok := strings.Cut(rng, "-")
	if !ok {
		return bad("no range")
	}
	start, err1 := strconv.ParseUint(lo, 16, 64)
	last, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || last < start {
		return bad("range")
	}
	attrs, rest, ok := strings.Cut(rest, "): ")
	if !ok {
		return bad("no name")
	}
	prioS, kind, ok := strings.Cut(attrs, ", ")
	if !ok {
		return bad("attributes")
	}
	prio, err := strconv.Atoi(prioS)
	if err != nil {
		return bad("prio")
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return bad("empty name")
	}
	r := Region{Start: start, Prio: prio, Kind: kind, Name: fields[0]}
	// End is exclusive; the last range may end at 2^64-1, which saturates rather than wrapping.
	if last == ^uint64(0) {
		r.End = last
	} else {
		r.End = last + 1
	}
	for _, f := range fields[1:] {
		if off, ok := strings.CutPrefix(f, "@"); ok {
			v, err := strconv.ParseUint(off, 16, 64)
			if err != nil {
				return bad("offset")
			}
			r.Offset = v
		}
	}
	return r, nil
}

// RAMBlock picks the main RAM block's name: the RAM-kind region name covering the most addresses ("pc.ram",
// or the memory-backend id when the machine uses one).
func RAMBlock(regions []Region) string {
	sizes := map[string]uint64{}
	for _, r := range regions {
		if r.Kind == "ram" {
			sizes[r.Name] += r.Size()
		}
	}
	best, bestSize := "", uint64(0)
	for n, s := range sizes {
		if s > bestSize || (s == bestSize && n < best) {
			best, bestSize = n, s
		}
	}
	return best
}
