package discover

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/windows/machine"
)

// rawRead reads every data range of img in 2 MiB chunks: the memory-bandwidth baseline.
func rawRead(b *testing.B, img *machine.RawImage) (time.Duration, uint64) {
	ctx := context.Background()
	rs, err := img.Ranges(ctx)
	require.NoError(b, err)
	buf := make([]byte, scanChunk)
	start := time.Now()
	var n uint64
	var sink byte
	for _, r := range rs {
		for pa := r.Start; pa < r.End; pa += scanChunk {
			c := buf[:min(uint64(scanChunk), r.End-pa)]
			require.NoError(b, img.ReadPhysical(ctx, pa, c))
			for i := 0; i < len(c); i += 4096 {
				sink ^= c[i]
			}
			n += uint64(len(c))
		}
	}
	_ = sink
	return time.Since(start), n
}

// BenchmarkDiscoveryFromCPUs times full discovery on a fixture ram.img, relative to one raw read of the image.
func BenchmarkDiscoveryFromCPUs(b *testing.B) {
	g, img := buildGuest(b, winguest.Options{Build: 19041, Seed: 1, CPUs: 4})
	lg := testLogger(b)
	rawRead(b, img) // warm the page cache and the mapping
	raw, _ := rawRead(b, img)
	b.ResetTimer()
	for b.Loop() {
		_, err := FromCPUs(context.Background(), lg, img, machine.StaticCPUs(g.CPUs))
		require.NoError(b, err)
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(per)/float64(raw), "x-raw-image-read")
}

// BenchmarkPhysicalScan4GiBSparse scans a 4 GiB sparse image (the fixture's RAM at 0 plus data islands up to
// 4 GiB) for page-table roots, reporting MB/s of data scanned and the ratio to a raw read of the same data.
func BenchmarkPhysicalScan4GiBSparse(b *testing.B) {
	g, _ := buildGuest(b, winguest.Options{Build: 19041, Seed: 1, CPUs: 1})
	path := filepath.Join(b.TempDir(), "sparse.img")
	out, err := os.Create(path)
	require.NoError(b, err)
	in, err := os.Open(g.RAMImage)
	require.NoError(b, err)
	_, err = io.Copy(out, in)
	in.Close()
	require.NoError(b, err)
	island := make([]byte, 8<<20)
	for i := range island {
		island[i] = byte(i * 7)
	}
	for off := int64(1 << 30); off < 4<<30; off += 1 << 30 {
		_, err = out.WriteAt(island, off)
		require.NoError(b, err)
	}
	require.NoError(b, out.Truncate(4<<30))
	require.NoError(b, out.Close())
	img, err := machine.OpenRawImage(path)
	require.NoError(b, err)
	defer img.Close()

	rawRead(b, img) // warm the page cache and the mapping
	raw, n := rawRead(b, img)
	b.SetBytes(int64(n))
	b.ResetTimer()
	for b.Loop() {
		dtbs, err := ScanDTBs(context.Background(), img, img.Size(), nil)
		require.NoError(b, err)
		require.Contains(b, dtbs, uint64(g.Manifest.KernelCR3))
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(n)/per.Seconds()/1e6, "MB/s-scanned")
	b.ReportMetric(float64(per)/float64(raw), "x-raw-read")
}
