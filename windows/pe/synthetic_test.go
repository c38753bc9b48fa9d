package pe

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSyntheticImageSeed decodes the project-made fuzz seed: a PE32+ with one direct export, one forwarder and an
// RSDS record, laid out as in memory.
func TestSyntheticImageSeed(t *testing.T) {
	raw, err := os.ReadFile("testdata/fuzz/FuzzImage/synthetic-pe32plus")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	require.Len(t, lines, 2)
	lit := strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")
	s, err := strconv.Unquote(lit)
	require.NoError(t, err)
	ctx := context.Background()
	im, err := Open(ctx, Flat{Base: 0x10000, Data: []byte(s)}, 0x10000)
	require.NoError(t, err)
	ex, err := im.Exports(ctx)
	require.NoError(t, err)
	require.Equal(t, "test.sys", ex.DLLName)
	a, ok := ex.Lookup("Alpha")
	require.True(t, ok)
	require.EqualValues(t, 0x1800, a.RVA)
	require.EqualValues(t, 1, a.Ordinal)
	b, ok := ex.Lookup("Beta")
	require.True(t, ok)
	require.Equal(t, "OTHER.Func", b.Forwarder)
	require.Zero(t, b.RVA)
	cv, err := im.CodeView(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 3, cv.Age)
	require.Equal(t, "test.pdb", cv.PDBName())
	require.Equal(t, "test.pdb/03020100050407060809"+"0A0B0C0D0E0F3/test.pdb", cv.SymbolKey())
}
