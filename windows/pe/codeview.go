package pe

import (
	"context"
	"fmt"
	"strings"

	gope "www.velocidex.com/golang/go-pe"
)

// CodeView is the RSDS record that names the image's PDB.
type CodeView struct {
	GUID    [16]byte // as stored: Data1 LE, Data2 LE, Data3 LE, Data4
	Data1   uint32
	Data2   uint16
	Data3   uint16
	Data4   [8]byte
	Age     uint32
	PDBPath string
}

// GUIDString is the GUID in registry form, e.g. 194FA4D1-A2D0-4302-B8EF-4664CD849283.
func (c *CodeView) GUIDString() string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", c.Data1, c.Data2, c.Data3, c.Data4[:2], c.Data4[2:])
}

// PDBName is the file name part of the PDB path.
func (c *CodeView) PDBName() string {
	p := c.PDBPath
	if i := strings.LastIndexAny(p, `\/`); i >= 0 {
		p = p[i+1:]
	}
	return p
}

// SymbolKey is the symbol-server path of the PDB: name/GUIDAge/name.
func (c *CodeView) SymbolKey() string {
	n := c.PDBName()
	return fmt.Sprintf("%s/%08X%04X%04X%X%X/%s", n, c.Data1, c.Data2, c.Data3, c.Data4[:], c.Age, n)
}

// BinaryKey is the symbol-server path of the image itself: name/TimeDateStampSizeOfImage/name.
func (h *Headers) BinaryKey(name string) string {
	return fmt.Sprintf("%s/%08X%x/%s", name, h.TimeDateStamp, h.SizeOfImage, name)
}

// maxDebugEntries bounds the debug directory walk.
const maxDebugEntries = 64

// CodeView finds the CODEVIEW entry of the debug directory and decodes its RSDS record.
func (im *Image) CodeView(ctx context.Context) (cv *CodeView, err error) {
	defer func() {
		if r := recover(); r != nil {
			cv, err = nil, fmt.Errorf("%w: debug directory decoder failed: %v", ErrMalformed, r)
		}
	}()
	dir := im.Directories[DirDebug]
	if dir.RVA == 0 || dir.Size == 0 {
		return nil, fmt.Errorf("image at %#x has no debug directory", im.Base)
	}
	r := rvaReader{ctx: ctx, im: im}
	prof := gope.NewPeProfile()
	n := min(dir.Size/28, maxDebugEntries)
	for i := uint32(0); i < n; i++ {
		off := dir.RVA + 28*i
		if !im.Resident(ctx, off) {
			return nil, fmt.Errorf("debug directory at VA %#x: %w", im.Base+uint64(off), ErrUnreadable)
		}
		d := prof.IMAGE_DEBUG_DIRECTORY(r, int64(off))
		if d.Type().Value != 2 {
			continue
		}
		raw := d.AddressOfRawData()
		if !im.Resident(ctx, raw) {
			return nil, fmt.Errorf("CodeView record at VA %#x: %w", im.Base+uint64(raw), ErrUnreadable)
		}
		rs := prof.CV_RSDS_HEADER(r, int64(raw))
		if rs.Signature() != "RSDS" {
			return nil, fmt.Errorf("%w: CodeView record at RVA %#x is %q, not RSDS", ErrMalformed, raw, rs.Signature())
		}
		g := rs.GUID()
		cv := &CodeView{Data1: g.Data1(), Data2: g.Data2(), Data3: g.Data3(), Age: rs.Age(), PDBPath: rs.Filename()}
		copy(cv.Data4[:], g.Data4())
		if err := im.ReadRVA(ctx, raw+4, cv.GUID[:]); err != nil {
			return nil, err
		}
		return cv, nil
	}
	return nil, fmt.Errorf("image at %#x has no CodeView debug entry", im.Base)
}
