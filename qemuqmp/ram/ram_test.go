package ram

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/qemuqmp/qmp"
)

// newShared makes a 3-page file whose pages 0-1 are low RAM at GPA 0 and page 2 is "high" RAM at 4 GiB.
func newShared(t *testing.T) (*Shared, string) {
	path := filepath.Join(t.TempDir(), "ram")
	data := make([]byte, 3*4096)
	for i := range data {
		data[i] = byte(i / 4096)
	}
	require.NoError(t, os.WriteFile(path, data, 0o600))
	s, err := OpenShared(path, []Mapping{{Start: 0x100000000, End: 0x100001000, Offset: 0x2000}, {Start: 0, End: 0x2000, Offset: 0}})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestSharedTranslatesAcrossTheHole(t *testing.T) {
	s, path := newShared(t)
	ctx := context.Background()
	buf := make([]byte, 8)
	require.NoError(t, s.ReadPhysical(ctx, 0x100000000, buf))
	require.Equal(t, []byte{2, 2, 2, 2, 2, 2, 2, 2}, buf)
	require.NoError(t, s.ReadPhysical(ctx, 0xffc, buf), "crosses two pages of one mapping")
	require.Equal(t, []byte{0, 0, 0, 0, 1, 1, 1, 1}, buf)

	require.ErrorIs(t, s.ReadPhysical(ctx, 0x1ffc, buf), ErrNotBacked, "runs off the end of low RAM")
	require.ErrorIs(t, s.ReadPhysical(ctx, 0x2000, buf), ErrNotBacked)
	require.ErrorIs(t, s.ReadPhysical(ctx, 0xffffffffffffff00, buf), ErrNotBacked)

	require.NoError(t, s.WritePhysical(ctx, 0x100000ffc, []byte{9, 9, 9, 9}))
	require.ErrorIs(t, s.WritePhysical(ctx, 0x100000ffc, []byte{7, 7, 7, 7, 7}), ErrNotBacked)
	file, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, []byte{9, 9, 9, 9}, file[0x2ffc:], "write went to the file, the refused one wrote nothing")
}

func TestOpenSharedRejectsBadMaps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram")
	require.NoError(t, os.WriteFile(path, make([]byte, 4096), 0o600))
	for name, maps := range map[string][]Mapping{
		"beyond file": {{Start: 0, End: 0x2000}},
		"overlap":     {{Start: 0, End: 0x800}, {Start: 0x400, End: 0x1000, Offset: 0}},
		"empty":       {{Start: 0x10, End: 0x10}},
	} {
		_, err := OpenShared(path, maps)
		require.Error(t, err, name)
	}
}

func TestMappingsForSkipsLegacyWindowAndOtherBlocks(t *testing.T) {
	regions := []qmp.Region{
		{Start: 0, End: 0xc3000, Kind: "ram", Name: "pc.ram"},
		{Start: 0xc3000, End: 0xe8000, Kind: "rom", Name: "pc.ram", Offset: 0xc3000},
		{Start: 0x100000, End: 0x8000000, Kind: "ram", Name: "pc.ram", Offset: 0x100000},
		{Start: 0xfffc0000, End: 0x100000000, Kind: "rom", Name: "pc.bios"},
		{Start: 0x100000000, End: 0x180000000, Kind: "ram", Name: "pc.ram", Offset: 0xc0000000},
	}
	require.Equal(t, []Mapping{
		{Start: 0, End: 0xa0000},
		{Start: 0x100000, End: 0x8000000, Offset: 0x100000},
		{Start: 0x100000000, End: 0x180000000, Offset: 0xc0000000},
	}, MappingsFor(regions, "pc.ram"))
	// A RAM region straddling the window keeps both sides with consistent offsets.
	require.Equal(t, []Mapping{{Start: 0, End: 0xa0000}, {Start: 0x100000, End: 0x200000, Offset: 0x100000}},
		MappingsFor([]qmp.Region{{Start: 0, End: 0x200000, Kind: "ram", Name: "m"}}, "m"))
}

type fakeBackend struct {
	name  string
	calls *[]string
	err   error
}

func (f fakeBackend) ReadPhysical(context.Context, uint64, []byte) error {
	*f.calls = append(*f.calls, f.name)
	return f.err
}

func (f fakeBackend) WritePhysical(context.Context, uint64, []byte) error {
	*f.calls = append(*f.calls, "w"+f.name)
	return f.err
}

func TestAutoRouting(t *testing.T) {
	s, _ := newShared(t)
	var calls []string
	busy := false
	a := &Auto{Shared: s, Bulk: fakeBackend{"bulk", &calls, nil}, Small: fakeBackend{"small", &calls, nil},
		BulkThreshold: 4096, SmallUnavailable: func() bool { return busy }}
	ctx := context.Background()
	require.NoError(t, a.ReadPhysical(ctx, 0, make([]byte, 8)))         // shared
	require.NoError(t, a.ReadPhysical(ctx, 0x5000, make([]byte, 8)))    // small
	require.NoError(t, a.ReadPhysical(ctx, 0x5000, make([]byte, 8192))) // bulk
	busy = true
	require.NoError(t, a.ReadPhysical(ctx, 0x5000, make([]byte, 8)))  // bulk while the gdbstub cannot serve
	require.NoError(t, a.WritePhysical(ctx, 0x5000, make([]byte, 8))) // writes never go to bulk
	require.Equal(t, []string{"small", "bulk", "bulk", "wsmall"}, calls)

	a.Small = fakeBackend{"small", &calls, errors.New("boom")}
	busy = false
	require.ErrorContains(t, a.ReadPhysical(ctx, 0x5000, make([]byte, 8)), "boom")
}

func TestPmemsaveWriteRefused(t *testing.T) {
	p := &Pmemsave{Dir: t.TempDir()}
	require.ErrorIs(t, p.WritePhysical(context.Background(), 0, []byte{1}), ErrReadOnly)
}
