package shareddata

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPathHonoursOverride(t *testing.T) {
	d := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(d, "testdata"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(d, "testdata", "x.bin"), []byte{1}, 0o644))
	t.Setenv(EnvOverride, d)
	p, err := Path("testdata/x.bin")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(d, "testdata", "x.bin"), p)
	_, err = Path("testdata/missing.bin")
	require.Error(t, err)
	require.Contains(t, err.Error(), "missing.bin")
}

func TestRepoRootFindsGoMod(t *testing.T) {
	root, err := RepoRoot()
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(root, "go.mod"))
}
