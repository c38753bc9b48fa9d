package debugger

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/kdstub/kdstub/windows/objects"
	"github.com/kdstub/kdstub/windows/pe"
)

// Module is a loaded kernel image with the symbols its export table gives. Without PDBs the export table is the
// only symbol source the guest itself carries, which is also what WinDbg falls back to ("export symbols").
type Module struct {
	Name     string // WinDbg's module name: "nt" for the kernel, else the file name without extension
	FileName string // BaseDllName, e.g. ntoskrnl.exe
	FullName string
	Base     uint64
	Size     uint64
	Exports  []Symbol // sorted by address
	byName   map[string]uint64
	pdata    *pdataCache // lazily read exception directory, for unwinding
}

// Symbol is one named address.
type Symbol struct {
	Name string `json:"name"`
	Addr uint64 `json:"addr"`
}

// Contains reports whether va is inside the image.
func (m *Module) Contains(va uint64) bool { return va >= m.Base && va-m.Base < m.Size }

// maxSymbolDistance is how far past an export an address is still printed as export+offset; farther addresses
// print as module+offset, since an export table says nothing about where a function ends.
const maxSymbolDistance = 0x10000

// moduleName turns a file name into the name WinDbg uses in "module!symbol".
func moduleName(file string) string {
	base := file
	if i := strings.LastIndexByte(base, '.'); i > 0 {
		base = base[:i]
	}
	switch strings.ToLower(base) {
	case "ntoskrnl", "ntkrnlmp", "ntkrnlpa", "ntkrpamp":
		return "nt"
	}
	return base
}

// loadModules walks PsLoadedModuleList and reads each image's export table. Images whose headers are paged out
// keep an empty symbol list.
func loadModules(ctx context.Context, mem vmem, head uint64) ([]*Module, error) {
	list, err := objects.KernelModules(ctx, mem, head)
	if err != nil && len(list) == 0 {
		return nil, err
	}
	out := make([]*Module, 0, len(list))
	for _, lm := range list {
		m := &Module{Name: moduleName(lm.Name), FileName: lm.Name, FullName: lm.FullName, Base: lm.Base,
			Size: uint64(lm.Size), byName: map[string]uint64{}}
		if im, err := pe.Open(ctx, mem, lm.Base); err == nil {
			if ex, err := im.Exports(ctx); err == nil {
				for _, e := range ex.Named {
					if e.RVA == 0 || e.Forwarder != "" {
						continue
					}
					va := lm.Base + uint64(e.RVA)
					m.Exports = append(m.Exports, Symbol{Name: e.Name, Addr: va})
					m.byName[strings.ToLower(e.Name)] = va
				}
			}
			m.pdata = &pdataCache{im: im}
		}
		sort.SliceStable(m.Exports, func(i, j int) bool { return m.Exports[i].Addr < m.Exports[j].Addr })
		out = append(out, m)
	}
	return out, nil
}

// moduleAt returns the module containing va.
func (e *Engine) moduleAt(va uint64) *Module {
	for _, m := range e.modules {
		if m.Contains(va) {
			return m
		}
	}
	return nil
}

// moduleNamed finds a module by WinDbg name or file name (case-insensitive).
func (e *Engine) moduleNamed(name string) *Module {
	for _, m := range e.modules {
		if strings.EqualFold(m.Name, name) || strings.EqualFold(m.FileName, name) {
			return m
		}
	}
	return nil
}

// lookupSymbol resolves "mod!Name" or a bare "Name" (searched in every module, the kernel first).
func (e *Engine) lookupSymbol(s string) (uint64, bool) {
	if mod, name, ok := strings.Cut(s, "!"); ok {
		m := e.moduleNamed(mod)
		if m == nil {
			return 0, false
		}
		if name == "" {
			return m.Base, true
		}
		va, ok := m.byName[strings.ToLower(name)]
		return va, ok
	}
	for _, m := range e.modules {
		if va, ok := m.byName[strings.ToLower(s)]; ok {
			return va, true
		}
	}
	if m := e.moduleNamed(s); m != nil {
		return m.Base, true
	}
	return 0, false
}

// symbolize prints va as WinDbg does without private symbols: module!Export+0xoff, module+0xoff, or "".
func (e *Engine) symbolize(va uint64) string {
	m := e.moduleAt(va)
	if m == nil {
		return ""
	}
	i := sort.Search(len(m.Exports), func(i int) bool { return m.Exports[i].Addr > va }) - 1
	if i >= 0 && va-m.Exports[i].Addr < maxSymbolDistance {
		if off := va - m.Exports[i].Addr; off != 0 {
			return fmt.Sprintf("%s!%s+0x%x", m.Name, m.Exports[i].Name, off)
		}
		return m.Name + "!" + m.Exports[i].Name
	}
	if va == m.Base {
		return m.Name
	}
	return fmt.Sprintf("%s+0x%x", m.Name, va-m.Base)
}

// fmtAddr prints a 64-bit address with WinDbg's backtick separator.
func fmtAddr(v uint64) string { return fmt.Sprintf("%08x`%08x", v>>32, uint32(v)) }
