package isf

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/ulikunitz/xz"
)

// MaxJSONSize caps the decompressed JSON size. Real kernel tables are about 7 MB; the cap stops a
// hostile .xz from expanding without bound.
const MaxJSONSize = 256 << 20

// fileNameRE matches the JPCERTCC naming convention: <module>-<version>-<GUID>-<age>.json[.xz].
var fileNameRE = regexp.MustCompile(`^([^-]+)-(\d+\.\d+\.(\d+)\.\d+)-([0-9A-Fa-f]{32})-(\d+)\.json(\.xz)?$`)

// Load reads an ISF file (.json.xz, or plain .json). When the file name follows the JPCERTCC
// convention the version and build are taken from it, and its GUID and age must match the metadata.
func Load(path string) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("isf: open %s: %w", path, err)
	}
	defer f.Close()
	var r io.Reader = bufio.NewReaderSize(f, 1<<16)
	if strings.HasSuffix(path, ".xz") {
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("isf: %s: xz header: %w", path, err)
		}
		r = xr
	}
	t, err := Parse(r)
	if err != nil {
		return nil, fmt.Errorf("isf: %s: %w", path, err)
	}
	if err := applyFileName(t, filepath.Base(path)); err != nil {
		return nil, fmt.Errorf("isf: %s: %w", path, err)
	}
	return t, nil
}

// applyFileName fills Version/Build from a JPCERTCC-style name and cross-checks GUID and age, so a
// mislabelled file is caught instead of silently describing the wrong kernel.
func applyFileName(t *Table, name string) error {
	m := fileNameRE.FindStringSubmatch(name)
	if m == nil {
		return nil
	}
	build, err := strconv.ParseUint(m[3], 10, 32)
	if err != nil {
		return fmt.Errorf("build number in file name %q: %w", name, err)
	}
	age, err := strconv.ParseUint(m[5], 10, 32)
	if err != nil {
		return fmt.Errorf("age in file name %q: %w", name, err)
	}
	guid := strings.ToUpper(m[4])
	if t.Meta.GUID != "" && t.Meta.GUID != guid {
		return fmt.Errorf("file name GUID %s differs from metadata GUID %s", guid, t.Meta.GUID)
	}
	if t.Meta.GUID != "" && t.Meta.Age != uint32(age) {
		return fmt.Errorf("file name age %d differs from metadata age %d", age, t.Meta.Age)
	}
	t.Meta.GUID = guid
	t.Meta.Age = uint32(age)
	t.Meta.Version = m[2]
	t.Meta.Build = uint32(build)
	return nil
}

// Parse decodes ISF JSON from r (at most MaxJSONSize bytes).
func Parse(r io.Reader) (*Table, error) {
	lr := &io.LimitedReader{R: r, N: MaxJSONSize + 1}
	var raw rawFile
	dec := json.NewDecoder(lr)
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		if lr.N <= 0 {
			return nil, fmt.Errorf("isf: JSON larger than %d bytes", MaxJSONSize)
		}
		return nil, fmt.Errorf("isf: decode JSON: %w", err)
	}
	return raw.table()
}

// ParseBytes decodes ISF JSON held in memory.
func ParseBytes(data []byte) (*Table, error) {
	return Parse(bytes.NewReader(data))
}

type rawFile struct {
	Metadata  *rawMetadata           `json:"metadata"`
	Symbols   map[string]rawSymbol   `json:"symbols"`
	UserTypes map[string]rawUserType `json:"user_types"`
	BaseTypes map[string]rawBaseType `json:"base_types"`
	Enums     map[string]rawEnum     `json:"enums"`
}

type rawMetadata struct {
	Format  string `json:"format"`
	Windows *struct {
		PDB *struct {
			GUID        string      `json:"GUID"`
			Age         json.Number `json:"age"`
			Database    string      `json:"database"`
			MachineType json.Number `json:"machine_type"`
		} `json:"pdb"`
	} `json:"windows"`
}

type rawSymbol struct {
	Address *json.Number `json:"address"`
}

type rawUserType struct {
	Kind   string              `json:"kind"`
	Size   json.Number         `json:"size"`
	Fields map[string]rawField `json:"fields"`
}

type rawField struct {
	Offset json.Number `json:"offset"`
	Type   *rawTypeRef `json:"type"`
}

type rawTypeRef struct {
	Kind        string      `json:"kind"`
	Name        string      `json:"name"`
	Subtype     *rawTypeRef `json:"subtype"`
	Type        *rawTypeRef `json:"type"`
	Count       json.Number `json:"count"`
	BitPosition json.Number `json:"bit_position"`
	BitLength   json.Number `json:"bit_length"`
}

type rawBaseType struct {
	Kind   string      `json:"kind"`
	Size   json.Number `json:"size"`
	Signed bool        `json:"signed"`
}

type rawEnum struct {
	Base      string                 `json:"base"`
	Size      json.Number            `json:"size"`
	Constants map[string]json.Number `json:"constants"`
}

func (raw *rawFile) table() (*Table, error) {
	if raw.Metadata == nil {
		return nil, errors.New("isf: no metadata object")
	}
	if raw.UserTypes == nil && raw.Symbols == nil {
		return nil, errors.New("isf: neither symbols nor user_types present")
	}
	t := &Table{
		symbols:   make(map[string]uint64, len(raw.Symbols)),
		types:     make(map[string]*Type, len(raw.UserTypes)),
		baseTypes: make(map[string]BaseType, len(raw.BaseTypes)),
		enums:     make(map[string]Enum, len(raw.Enums)),
	}
	if err := raw.Metadata.fill(&t.Meta); err != nil {
		return nil, err
	}
	for name, s := range raw.Symbols {
		if s.Address == nil {
			continue // type-only or constant symbols carry no address
		}
		a, err := parseUint(*s.Address, 64)
		if err != nil {
			return nil, fmt.Errorf("isf: symbol %q address: %w", name, err)
		}
		t.symbols[name] = a
	}
	for name, b := range raw.BaseTypes {
		sz, err := parseUint(b.Size, 32)
		if err != nil {
			return nil, fmt.Errorf("isf: base type %q size: %w", name, err)
		}
		t.baseTypes[name] = BaseType{Name: name, Kind: b.Kind, Size: uint32(sz), Signed: b.Signed}
	}
	for name, e := range raw.Enums {
		sz, err := parseUint(e.Size, 32)
		if err != nil {
			return nil, fmt.Errorf("isf: enum %q size: %w", name, err)
		}
		en := Enum{Name: name, Base: e.Base, Size: uint32(sz), Constants: make(map[string]int64, len(e.Constants))}
		for cn, cv := range e.Constants {
			v, err := cv.Int64()
			if err != nil {
				return nil, fmt.Errorf("isf: enum %q constant %q: %w", name, cn, err)
			}
			en.Constants[cn] = v
		}
		t.enums[name] = en
	}
	for name, u := range raw.UserTypes {
		ty, err := u.convert(name)
		if err != nil {
			return nil, err
		}
		t.types[name] = ty
	}
	return t, nil
}

func (m *rawMetadata) fill(out *Metadata) error {
	out.Format = m.Format
	if m.Windows == nil || m.Windows.PDB == nil {
		return nil // Linux/macOS tables have no PDB block; nothing to validate
	}
	p := m.Windows.PDB
	out.Database = p.Database
	if p.GUID != "" {
		g := strings.ToUpper(p.GUID)
		if len(g) != 32 || strings.Trim(g, "0123456789ABCDEF") != "" {
			return fmt.Errorf("isf: metadata GUID %q is not 32 hex digits", p.GUID)
		}
		out.GUID = g
	}
	if p.Age != "" {
		a, err := parseUint(p.Age, 32)
		if err != nil {
			return fmt.Errorf("isf: metadata age: %w", err)
		}
		out.Age = uint32(a)
	}
	if p.MachineType != "" {
		mt, err := parseUint(p.MachineType, 16)
		if err != nil {
			return fmt.Errorf("isf: metadata machine_type: %w", err)
		}
		out.Machine = uint16(mt)
	}
	return nil
}

func (u rawUserType) convert(name string) (*Type, error) {
	switch u.Kind {
	case KindStruct, KindUnion, KindClass:
	default:
		return nil, fmt.Errorf("isf: user type %q has kind %q, want struct, union or class", name, u.Kind)
	}
	sz, err := parseUint(u.Size, 32)
	if err != nil {
		return nil, fmt.Errorf("isf: user type %q size: %w", name, err)
	}
	ty := &Type{Name: name, Kind: u.Kind, Size: uint32(sz), Fields: make(map[string]Field, len(u.Fields))}
	for fn, f := range u.Fields {
		off, err := parseUint(f.Offset, 32)
		if err != nil {
			return nil, fmt.Errorf("isf: %s.%s offset: %w", name, fn, err)
		}
		if f.Type == nil {
			return nil, fmt.Errorf("isf: %s.%s has no type", name, fn)
		}
		ref, err := f.Type.convert(0)
		if err != nil {
			return nil, fmt.Errorf("isf: %s.%s type: %w", name, fn, err)
		}
		ty.Fields[fn] = Field{Name: fn, Offset: uint32(off), Type: ref}
	}
	return ty, nil
}

func (r *rawTypeRef) convert(depth int) (TypeRef, error) {
	if depth > maxPathDepth {
		return TypeRef{}, fmt.Errorf("type reference nested more than %d levels", maxPathDepth)
	}
	out := TypeRef{Kind: r.Kind, Name: r.Name}
	sub := func(s *rawTypeRef, what string) error {
		if s == nil {
			return fmt.Errorf("%s without %s", r.Kind, what)
		}
		c, err := s.convert(depth + 1)
		if err != nil {
			return err
		}
		out.Subtype = &c
		return nil
	}
	switch r.Kind {
	case KindBase, KindStruct, KindUnion, KindClass, KindEnum:
		if r.Name == "" {
			return TypeRef{}, fmt.Errorf("%s reference without a name", r.Kind)
		}
	case KindPointer:
		if err := sub(r.Subtype, "subtype"); err != nil {
			return TypeRef{}, err
		}
	case KindArray:
		n, err := parseUint(r.Count, 32)
		if err != nil {
			return TypeRef{}, fmt.Errorf("array count: %w", err)
		}
		out.Count = uint32(n)
		if err := sub(r.Subtype, "subtype"); err != nil {
			return TypeRef{}, err
		}
	case KindBitfield:
		pos, err := parseUint(r.BitPosition, 32)
		if err != nil {
			return TypeRef{}, fmt.Errorf("bit_position: %w", err)
		}
		n, err := parseUint(r.BitLength, 32)
		if err != nil {
			return TypeRef{}, fmt.Errorf("bit_length: %w", err)
		}
		if pos > 63 || n == 0 || n > 64 || pos+n > 64 {
			return TypeRef{}, fmt.Errorf("bitfield position %d length %d out of range", pos, n)
		}
		out.BitPosition, out.BitLength = uint32(pos), uint32(n)
		if err := sub(r.Type, "type"); err != nil {
			return TypeRef{}, err
		}
	case KindFunction:
	default:
		return TypeRef{}, fmt.Errorf("unknown type kind %q", r.Kind)
	}
	return out, nil
}

// parseUint accepts a non-negative JSON integer that fits in bits.
func parseUint(n json.Number, bits int) (uint64, error) {
	if n == "" {
		return 0, errors.New("missing number")
	}
	v, err := strconv.ParseUint(string(n), 10, bits)
	if err != nil {
		return 0, fmt.Errorf("number %q is not an unsigned %d-bit integer: %w", truncate(string(n)), bits, err)
	}
	return v, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
