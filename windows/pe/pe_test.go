package pe

import (
	"context"
	"encoding/binary"
	"os"
	"testing"

	"github.com/kdstub/kdstub/internal/shareddata"
	"github.com/stretchr/testify/require"
)

// mapShared lays a shared PE file out at its ImageBase and opens it through the in-memory path.
func mapShared(t *testing.T, name string) (*Image, []byte) {
	t.Helper()
	data, err := os.ReadFile(shareddata.Require(t, "testdata/pe/"+name))
	require.NoError(t, err)
	img, h, err := LayoutFile(data)
	require.NoError(t, err)
	im, err := Open(context.Background(), Flat{Base: h.ImageBase, Data: img}, h.ImageBase)
	require.NoError(t, err)
	return im, img
}

func TestRealDriversHeadersAndRSDS(t *testing.T) {
	cases := []struct {
		file, pdbKey, binKey string
		size, stamp          uint32
	}{
		{"win10-14347-x86-vmbus.sys", "vmbus.pdb/194FA4D1A2D04302B8EF4664CD8492831/vmbus.pdb", "vmbus.sys/5736958318000/vmbus.sys", 0x18000, 0x57369583},
		{"win10-14347-x86-storvsc.sys", "storvsc.pdb/EF92B6F51A114F889A4F71EC96C130251/storvsc.pdb", "", 0xA000, 0x57369648},
		{"win10-14347-x86-hyperkbd.sys", "hyperkbd.pdb/209C950515CB47368FB478159787E5D11/hyperkbd.pdb", "", 0x8000, 0x57369678},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			im, _ := mapShared(t, c.file)
			require.EqualValues(t, MachineI386, im.Machine)
			require.False(t, im.Is64)
			require.EqualValues(t, 1, im.Subsystem)
			require.EqualValues(t, 0x10000, im.ImageBase)
			require.Equal(t, c.size, im.SizeOfImage)
			require.Equal(t, c.stamp, im.TimeDateStamp)
			var names []string
			for _, s := range im.Sections {
				names = append(names, s.Name)
			}
			require.Equal(t, []string{".text", ".rdata", ".data", "PAGE", "INIT", ".rsrc", ".reloc"}, names)
			cv, err := im.CodeView(context.Background())
			require.NoError(t, err)
			require.Equal(t, c.pdbKey, cv.SymbolKey())
			if c.binKey != "" {
				require.Equal(t, c.binKey, im.BinaryKey("vmbus.sys"))
			}
			_, err = im.Exports(context.Background())
			require.Error(t, err, "the drivers have no export directory")
		})
	}
}

func TestRealKernel32ExportsAndRSDS(t *testing.T) {
	im, img := mapShared(t, "win-x64-kernel32.dll")
	ctx := context.Background()
	require.EqualValues(t, MachineAMD64, im.Machine)
	require.True(t, im.Is64)
	require.EqualValues(t, 0x180000000, im.ImageBase)
	require.EqualValues(t, 0xAC000, im.SizeOfImage)
	require.EqualValues(t, 0x59028368, im.TimeDateStamp)
	cv, err := im.CodeView(ctx)
	require.NoError(t, err)
	require.Equal(t, "kernel32.pdb/73AB6FCCD8AF423EB7B5DF504BBA64FD1/kernel32.pdb", cv.SymbolKey())
	require.Equal(t, "73AB6FCC-D8AF-423E-B7B5-DF504BBA64FD", cv.GUIDString())

	ex, err := im.Exports(ctx)
	require.NoError(t, err)
	require.Equal(t, "KERNEL32.dll", ex.DLLName)
	require.Len(t, ex.Named, 1607)
	require.Zero(t, ex.Unresident)
	var fwd, direct int
	for _, e := range ex.Named {
		if e.Forwarder != "" {
			fwd++
			require.Contains(t, e.Forwarder, ".")
		} else {
			direct++
			sec, ok := im.SectionAt(e.RVA)
			require.True(t, ok, "%s RVA %#x outside every section", e.Name, e.RVA)
			require.NotEmpty(t, sec.Name)
		}
	}
	require.Positive(t, fwd)
	require.Positive(t, direct)
	// Cross-check one lookup against the raw tables.
	e, ok := ex.Lookup("CreateFileW")
	require.True(t, ok)
	dir := im.Directories[DirExport]
	funcs := binary.LittleEndian.Uint32(img[dir.RVA+0x1C:])
	base := binary.LittleEndian.Uint32(img[dir.RVA+0x10:])
	require.Equal(t, binary.LittleEndian.Uint32(img[funcs+4*(e.Ordinal-base):]), e.RVA)
}

// TestPagedOutExportPagesAreTolerated removes one page of the name table and checks that the rest still decodes.
func TestPagedOutExportPagesAreTolerated(t *testing.T) {
	data, err := os.ReadFile(shareddata.Require(t, "testdata/pe/win-x64-kernel32.dll"))
	require.NoError(t, err)
	img, h, err := LayoutFile(data)
	require.NoError(t, err)
	holes := &holeyMemory{Flat: Flat{Base: h.ImageBase, Data: img}, holes: map[uint64]bool{}}
	dir := h.Directories[DirExport]
	names := binary.LittleEndian.Uint32(img[dir.RVA+0x20:])
	firstName := binary.LittleEndian.Uint32(img[names:])
	holes.holes[(h.ImageBase+uint64(firstName))&^0xFFF] = true
	im, err := Open(context.Background(), holes, h.ImageBase)
	require.NoError(t, err)
	ex, err := im.Exports(context.Background())
	require.NoError(t, err)
	require.Positive(t, ex.Unresident)
	require.Less(t, len(ex.Named), 1607)
	require.Greater(t, len(ex.Named), 100)
}

type holeyMemory struct {
	Flat
	holes map[uint64]bool
}

func (m *holeyMemory) ReadVirtual(ctx context.Context, va uint64, buf []byte) error {
	for p := va &^ 0xFFF; p < va+uint64(len(buf)); p += 0x1000 {
		if m.holes[p] {
			return ErrUnreadable
		}
	}
	return m.Flat.ReadVirtual(ctx, va, buf)
}

func TestParseHeadersRejectsGarbage(t *testing.T) {
	cases := map[string][]byte{
		"empty": nil,
		"no MZ": make([]byte, 0x200),
		"lfanew big": func() []byte {
			b := make([]byte, 0x200)
			b[0], b[1] = 'M', 'Z'
			b[0x3C] = 0xFF
			b[0x3D] = 0xFF
			return b
		}(),
		"no PE": func() []byte { b := make([]byte, 0x200); b[0], b[1] = 'M', 'Z'; b[0x3C] = 0x80; return b }(),
	}
	for name, b := range cases {
		_, err := ParseHeaders(b)
		require.ErrorIs(t, err, ErrMalformed, name)
	}
}
