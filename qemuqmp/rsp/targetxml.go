package rsp

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Register is one entry of the target description: its number for p/P, its size and its offset in a g reply.
type Register struct {
	Name   string
	Num    int
	Bits   int
	Offset int // byte offset in the g packet
}

// RegisterTable is the register layout described by target.xml, in register-number order.
type RegisterTable struct {
	Regs   []Register
	byName map[string]int
	Size   int // bytes in a full g reply
}

// Lookup returns the register named name.
func (t *RegisterTable) Lookup(name string) (Register, bool) {
	if t == nil {
		return Register{}, false
	}
	i, ok := t.byName[name]
	if !ok {
		return Register{}, false
	}
	return t.Regs[i], true
}

// Limits on target descriptions: QEMU's x86-64 description has 66 registers in two files.
const (
	maxRegisters   = 1024
	maxIncludes    = 16
	maxRegBits     = 4096
	maxXMLDocBytes = 1 << 20
)

// ErrBadTargetXML wraps every target-description parsing failure.
var ErrBadTargetXML = errors.New("rsp: bad target description")

// Fetcher returns the named annex of qXfer:features:read (e.g. "i386-64bit.xml").
type Fetcher func(annex string) ([]byte, error)

// ParseTargetXML parses a target description, following xi:include through fetch (which may be nil when the
// document is self-contained).
//
// The document is walked with a real XML tokenizer, so comments are skipped: QEMU's i386-64bit.xml mentions
// cs_base/ss_base/ds_base/es_base inside comments, and a regex scan would number every later register wrong.
// Registers are numbered in document order unless a regnum attribute says otherwise, as gdb does.
func ParseTargetXML(doc []byte, fetch Fetcher) (*RegisterTable, error) {
	t := &RegisterTable{byName: map[string]int{}}
	next := 0
	includes := 0
	var walk func(doc []byte, depth int) error
	walk = func(doc []byte, depth int) error {
		if len(doc) > maxXMLDocBytes {
			return fmt.Errorf("document of %d bytes: %w", len(doc), ErrBadTargetXML)
		}
		d := xml.NewDecoder(bytes.NewReader(doc))
		d.Strict = true
		// Target descriptions carry a DOCTYPE referencing gdb-target.dtd; nothing needs resolving.
		for {
			tok, err := d.Token()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%v: %w", err, ErrBadTargetXML)
			}
			se, ok := tok.(xml.StartElement)
			if !ok {
				continue
			}
			switch se.Name.Local {
			case "include":
				href := attr(se, "href")
				if href == "" {
					return fmt.Errorf("xi:include without href: %w", ErrBadTargetXML)
				}
				includes++
				if depth >= 4 || includes > maxIncludes {
					return fmt.Errorf("too many or too deeply nested includes at %q: %w", href, ErrBadTargetXML)
				}
				if fetch == nil {
					return fmt.Errorf("include %q but no fetcher: %w", href, ErrBadTargetXML)
				}
				sub, err := fetch(href)
				if err != nil {
					return fmt.Errorf("fetch %q: %w", href, err)
				}
				if err := walk(sub, depth+1); err != nil {
					return fmt.Errorf("in %q: %w", href, err)
				}
			case "reg":
				name := attr(se, "name")
				bits, err := strconv.Atoi(attr(se, "bitsize"))
				if name == "" || err != nil || bits <= 0 || bits > maxRegBits || bits%8 != 0 {
					return fmt.Errorf("reg %q bitsize %q: %w", name, attr(se, "bitsize"), ErrBadTargetXML)
				}
				num := next
				if rn := attr(se, "regnum"); rn != "" {
					v, err := strconv.Atoi(rn)
					if err != nil || v < 0 || v >= maxRegisters {
						return fmt.Errorf("reg %q regnum %q: %w", name, rn, ErrBadTargetXML)
					}
					num = v
				}
				if len(t.Regs) >= maxRegisters {
					return fmt.Errorf("more than %d registers: %w", maxRegisters, ErrBadTargetXML)
				}
				if _, dup := t.byName[name]; dup {
					return fmt.Errorf("register %q listed twice: %w", name, ErrBadTargetXML)
				}
				t.byName[name] = len(t.Regs)
				t.Regs = append(t.Regs, Register{Name: name, Num: num, Bits: bits})
				next = num + 1
			}
		}
	}
	if err := walk(doc, 0); err != nil {
		return nil, err
	}
	if len(t.Regs) == 0 {
		return nil, fmt.Errorf("no registers: %w", ErrBadTargetXML)
	}
	// g packs registers in number order; numbers must be distinct and gap-free for offsets to make sense.
	seen := make(map[int]bool, len(t.Regs))
	for _, r := range t.Regs {
		if seen[r.Num] {
			return nil, fmt.Errorf("register number %d used twice: %w", r.Num, ErrBadTargetXML)
		}
		seen[r.Num] = true
	}
	offsets := make([]int, len(t.Regs))
	order := make([]int, len(t.Regs))
	for i := range order {
		order[i] = i
	}
	sortByNum(order, t.Regs)
	off := 0
	for _, i := range order {
		offsets[i] = off
		off += t.Regs[i].Bits / 8
	}
	for i := range t.Regs {
		t.Regs[i].Offset = offsets[i]
	}
	t.Size = off
	return t, nil
}

func sortByNum(idx []int, regs []Register) {
	// insertion sort: at most maxRegisters entries, usually already ordered
	for i := 1; i < len(idx); i++ {
		for j := i; j > 0 && regs[idx[j]].Num < regs[idx[j-1]].Num; j-- {
			idx[j], idx[j-1] = idx[j-1], idx[j]
		}
	}
}

func attr(se xml.StartElement, name string) string {
	for _, a := range se.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}
