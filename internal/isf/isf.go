// Package isf reads volatility3 Intermediate Symbol Format (ISF) tables, the JSON symbol files that
// describe a Windows kernel's globals and structure layouts (derived from its PDB).
//
// The project uses them as ground truth, not at run time: tests compare discovered offsets with the
// real ones, and fixtures/layout derives its per-build structure tables from them. The tables are
// treated as untrusted input: every decode step validates what it reads and returns an error instead
// of panicking.
package isf

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrNotFound is wrapped by lookups that name a type, field or symbol the table does not have.
var ErrNotFound = errors.New("not found")

// Type kinds used in ISF type references.
const (
	KindBase     = "base"
	KindPointer  = "pointer"
	KindStruct   = "struct"
	KindUnion    = "union"
	KindClass    = "class"
	KindEnum     = "enum"
	KindArray    = "array"
	KindBitfield = "bitfield"
	KindFunction = "function"
)

// maxPathDepth bounds dotted-path resolution; real paths have a handful of components.
const maxPathDepth = 64

// Metadata identifies the binary a table describes.
type Metadata struct {
	// Format is the ISF format version, e.g. "6.1.0".
	Format string
	// Database is the PDB file name, e.g. "ntkrnlmp.pdb".
	Database string
	// GUID is the PDB GUID as 32 upper-case hex digits (the form symbol servers use).
	GUID string
	// Age is the PDB age.
	Age uint32
	// Machine is the PE machine type (0x8664 for x64).
	Machine uint16
	// Version is the file version parsed from the file name ("10.0.19041.3570"); empty when the name
	// does not follow the JPCERTCC convention.
	Version string
	// Build is the build number taken from Version (19041); zero when unknown.
	Build uint32
}

// TypeRef is a reference to a type, as it appears in a field or as an array/pointer subtype.
type TypeRef struct {
	Kind string
	// Name is the referenced type's name for base, struct, union, class and enum kinds.
	Name string
	// Subtype is the element type of arrays and pointers, and the storage type of bitfields.
	Subtype *TypeRef
	// Count is the element count of an array.
	Count uint32
	// BitPosition and BitLength locate a bitfield inside its storage type.
	BitPosition uint32
	BitLength   uint32
}

// Field is one member of a user type.
type Field struct {
	Name   string
	Offset uint32
	Type   TypeRef
}

// Type is a user type (struct, union or class).
type Type struct {
	Name   string
	Kind   string
	Size   uint32
	Fields map[string]Field
}

// FieldNames returns the field names ordered by offset (then by name), for stable listings.
func (t *Type) FieldNames() []string {
	names := make([]string, 0, len(t.Fields))
	for n := range t.Fields {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := t.Fields[names[i]], t.Fields[names[j]]
		if a.Offset != b.Offset {
			return a.Offset < b.Offset
		}
		return names[i] < names[j]
	})
	return names
}

// BaseType is a primitive type (int, pointer, ...).
type BaseType struct {
	Name   string
	Kind   string
	Size   uint32
	Signed bool
}

// Enum is an enumeration with its storage size and constants.
type Enum struct {
	Name      string
	Base      string
	Size      uint32
	Constants map[string]int64
}

// Table is a decoded ISF symbol table.
type Table struct {
	Meta      Metadata
	symbols   map[string]uint64
	types     map[string]*Type
	baseTypes map[string]BaseType
	enums     map[string]Enum
}

// Symbol returns the RVA of a global symbol.
func (t *Table) Symbol(name string) (rva uint64, ok bool) {
	rva, ok = t.symbols[name]
	return rva, ok
}

// SymbolNames returns every symbol name, sorted.
func (t *Table) SymbolNames() []string {
	out := make([]string, 0, len(t.symbols))
	for n := range t.symbols {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Type returns a user type by name (e.g. "_EPROCESS").
func (t *Table) Type(name string) (*Type, bool) {
	ty, ok := t.types[name]
	return ty, ok
}

// BaseType returns a primitive type by name (e.g. "unsigned long").
func (t *Table) BaseType(name string) (BaseType, bool) {
	b, ok := t.baseTypes[name]
	return b, ok
}

// Enum returns an enumeration by name.
func (t *Table) Enum(name string) (Enum, bool) {
	e, ok := t.enums[name]
	return e, ok
}

// Size returns the size in bytes of a user type, base type or enum.
func (t *Table) Size(typeName string) (uint32, error) {
	if ty, ok := t.types[typeName]; ok {
		return ty.Size, nil
	}
	if b, ok := t.baseTypes[typeName]; ok {
		return b.Size, nil
	}
	if e, ok := t.enums[typeName]; ok {
		return e.Size, nil
	}
	return 0, fmt.Errorf("isf: size of type %q: %w", typeName, ErrNotFound)
}

// Offset resolves a dotted path such as "_KTHREAD.ApcState.Process" to the byte offset of the last
// field from the start of the first type, descending through embedded struct/union fields.
func (t *Table) Offset(path string) (uint32, error) {
	f, err := t.Resolve(path)
	if err != nil {
		return 0, err
	}
	return f.Offset, nil
}

// Resolve is Offset that also returns the type of the last field. The returned Field's Offset is
// relative to the start of the first type in the path, and its Name is the full path.
func (t *Table) Resolve(path string) (Field, error) {
	parts := strings.Split(path, ".")
	if len(parts) < 2 {
		return Field{}, fmt.Errorf("isf: path %q: want Type.Field[.Field...]", path)
	}
	if len(parts) > maxPathDepth {
		return Field{}, fmt.Errorf("isf: path %q: more than %d components", path, maxPathDepth)
	}
	cur, ok := t.types[parts[0]]
	if !ok {
		return Field{}, fmt.Errorf("isf: path %q: type %q: %w", path, parts[0], ErrNotFound)
	}
	var off uint64
	var last Field
	for i, name := range parts[1:] {
		if cur == nil {
			return Field{}, fmt.Errorf("isf: path %q: %q is a %s, not a struct or union", path, strings.Join(parts[:i+1], "."), last.Type.Kind)
		}
		f, ok := cur.Fields[name]
		if !ok {
			return Field{}, fmt.Errorf("isf: path %q: type %s has no field %q: %w", path, cur.Name, name, ErrNotFound)
		}
		off += uint64(f.Offset)
		if off > 0xFFFFFFFF {
			return Field{}, fmt.Errorf("isf: path %q: offset overflows 32 bits", path)
		}
		last = f
		cur = nil
		if i+2 < len(parts) && isAggregate(f.Type.Kind) { // descend only when another component follows
			next, ok := t.types[f.Type.Name]
			if !ok {
				return Field{}, fmt.Errorf("isf: path %q: field %s refers to missing type %q: %w", path, name, f.Type.Name, ErrNotFound)
			}
			cur = next
		}
	}
	last.Name = path
	last.Offset = uint32(off)
	return last, nil
}

// RefSize returns the size in bytes of a type reference (for a bitfield, the size of its storage).
func (t *Table) RefSize(r TypeRef) (uint32, error) {
	return t.refSize(r, 0)
}

func (t *Table) refSize(r TypeRef, depth int) (uint32, error) {
	if depth > maxPathDepth {
		return 0, fmt.Errorf("isf: type reference nested more than %d levels", maxPathDepth)
	}
	switch r.Kind {
	case KindPointer:
		if b, ok := t.baseTypes["pointer"]; ok {
			return b.Size, nil
		}
		return 8, nil
	case KindArray:
		if r.Subtype == nil {
			return 0, errors.New("isf: array without subtype")
		}
		es, err := t.refSize(*r.Subtype, depth+1)
		if err != nil {
			return 0, err
		}
		n := uint64(es) * uint64(r.Count)
		if n > 0xFFFFFFFF {
			return 0, fmt.Errorf("isf: array of %d × %d bytes overflows 32 bits", r.Count, es)
		}
		return uint32(n), nil
	case KindBitfield:
		if r.Subtype == nil {
			return 0, errors.New("isf: bitfield without storage type")
		}
		return t.refSize(*r.Subtype, depth+1)
	case KindFunction:
		return 0, errors.New("isf: a function type has no size")
	default:
		return t.Size(r.Name)
	}
}

func isAggregate(kind string) bool {
	return kind == KindStruct || kind == KindUnion || kind == KindClass
}
