package machine

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRawImageReadsAndReportsSparseRanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram.img")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(64<<20))
	_, err = f.WriteAt([]byte("hello"), 32<<20)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	img, err := OpenRawImage(path)
	require.NoError(t, err)
	defer img.Close()
	ctx := context.Background()
	buf := make([]byte, 5)
	require.NoError(t, img.ReadPhysical(ctx, 32<<20, buf))
	require.Equal(t, "hello", string(buf))
	require.ErrorIs(t, img.ReadPhysical(ctx, 64<<20-2, buf), ErrOutOfRange)

	rs, err := img.Ranges(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, rs)
	var total uint64
	for _, r := range rs {
		total += r.End - r.Start
		require.True(t, r.Start <= 32<<20 || r.End > 32<<20)
	}
	require.Less(t, total, uint64(64<<20), "a sparse image should not report its holes as data")
}

func TestSparseMemoryAbsentPages(t *testing.T) {
	m := NewSparseMemory()
	m.Write(0x1FFE, []byte{1, 2, 3, 4})
	buf := make([]byte, 4)
	require.NoError(t, m.ReadPhysical(context.Background(), 0x1FFE, buf))
	require.Equal(t, []byte{1, 2, 3, 4}, buf)
	require.ErrorIs(t, m.ReadPhysical(context.Background(), 0x5000, buf), ErrOutOfRange)
}

func TestStaticCPUs(t *testing.T) {
	s := StaticCPUs{{RIP: 1}, {RIP: 2}}
	require.Equal(t, 2, s.CPUCount())
	r, err := s.Registers(context.Background(), 1)
	require.NoError(t, err)
	require.EqualValues(t, 2, r.RIP)
	_, err = s.Registers(context.Background(), 2)
	require.Error(t, err)
}

func TestRawImageMappedBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram.img")
	require.NoError(t, os.WriteFile(path, []byte("0123456789"), 0o600))
	img, err := OpenRawImage(path)
	require.NoError(t, err)
	defer img.Close()
	require.Equal(t, "345", string(img.MappedBytes(3, 3)))
	require.Nil(t, img.MappedBytes(8, 3))
	require.Nil(t, img.MappedBytes(11, 1))
}
