package pe

import (
	"context"
	"fmt"
	"sort"

	gope "www.velocidex.com/golang/go-pe"
)

// maxExports bounds the export tables read from a hostile image (ntoskrnl has about 3,000).
const maxExports = 1 << 14

// Export is one named export.
type Export struct {
	Name      string
	Ordinal   uint32 // biased by the directory's Base
	RVA       uint32 // 0 for forwarders
	Forwarder string // "DLL.Func" when the entry points into the export directory
}

// Exports is a decoded export directory.
type Exports struct {
	DLLName string
	Named   []Export // sorted by name as in the image
	byName  map[string]int
	// Unresident counts entries whose name or address could not be read (paged-out .edata pages).
	Unresident int
}

// Lookup returns the export with the given name.
func (e *Exports) Lookup(name string) (Export, bool) {
	if i, ok := e.byName[name]; ok {
		return e.Named[i], true
	}
	return Export{}, false
}

// Exports decodes the export directory. The directory header comes from go-pe's IMAGE_EXPORT_DIRECTORY; the
// name → ordinal → address join is done here because go-pe mis-joins forwarders (it indexes the ordinal table
// by function index).
func (im *Image) Exports(ctx context.Context) (ex *Exports, err error) {
	defer func() {
		if r := recover(); r != nil { // go-pe is not audited against hostile images; never let it crash us
			ex, err = nil, fmt.Errorf("%w: export directory decoder failed: %v", ErrMalformed, r)
		}
	}()
	dir := im.Directories[DirExport]
	if dir.RVA == 0 || dir.Size == 0 {
		return nil, fmt.Errorf("image at %#x has no export directory", im.Base)
	}
	if uint64(dir.RVA)+40 > uint64(im.SizeOfImage) {
		return nil, fmt.Errorf("%w: export directory RVA %#x beyond image", ErrMalformed, dir.RVA)
	}
	if !im.Resident(ctx, dir.RVA) {
		return nil, fmt.Errorf("export directory at VA %#x: %w", im.Base+uint64(dir.RVA), ErrUnreadable)
	}
	r := rvaReader{ctx: ctx, im: im}
	prof := gope.NewPeProfile()
	d := prof.IMAGE_EXPORT_DIRECTORY(r, int64(dir.RVA))
	inDir := func(rva uint32) bool { return rva >= dir.RVA && rva-dir.RVA < dir.Size }

	ex = &Exports{byName: map[string]int{}}
	ex.DLLName = gope.ParseTerminatedString(r, int64(d.Name()))
	nNames := int(min(d.NumberOfNames(), maxExports))
	nFuncs := int(min(d.NumberOfFunctions(), maxExports))
	names := gope.ParseArray_uint32(prof, r, int64(d.AddressOfNames()), nNames)
	ords := gope.ParseArray_uint16(prof, r, int64(d.AddressOfNameOrdinals()), nNames)
	funcs := gope.ParseArray_uint32(prof, r, int64(d.AddressOfFunctions()), nFuncs)
	for i := range names {
		if !im.Resident(ctx, names[i]) || !im.Resident(ctx, d.AddressOfNameOrdinals()+uint32(2*i)) {
			ex.Unresident++
			continue
		}
		name := gope.ParseTerminatedString(r, int64(names[i]))
		idx := int(ords[i])
		if name == "" || idx >= len(funcs) {
			continue
		}
		if !im.Resident(ctx, d.AddressOfFunctions()+uint32(4*idx)) {
			ex.Unresident++
			continue
		}
		e := Export{Name: name, Ordinal: d.Base() + uint32(idx), RVA: funcs[idx]}
		if inDir(e.RVA) {
			e.Forwarder = gope.ParseTerminatedString(r, int64(e.RVA))
			e.RVA = 0
		}
		if _, dup := ex.byName[name]; !dup {
			ex.byName[name] = len(ex.Named)
			ex.Named = append(ex.Named, e)
		}
	}
	sort.SliceStable(ex.Named, func(a, b int) bool { return ex.Named[a].Name < ex.Named[b].Name })
	for i, e := range ex.Named {
		ex.byName[e.Name] = i
	}
	return ex, nil
}
