package pe

import (
	"context"
	"os"
	"testing"

	"github.com/kdstub/kdstub/internal/shareddata"
)

// FuzzImage feeds hostile bytes as a whole memory image (headers, export directory, debug directory, RSDS).
func FuzzImage(f *testing.F) {
	for _, name := range []string{"win-x64-kernel32.dll", "win10-14347-x86-hyperkbd.sys"} {
		if p, err := shareddata.Path("testdata/pe/" + name); err == nil {
			if data, err := os.ReadFile(p); err == nil {
				if img, _, err := LayoutFile(data); err == nil {
					f.Add(img[:min(len(img), 0x20000)])
				}
				f.Add(data[:min(len(data), 0x20000)])
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParseHeaders(data)
		_, _, _ = LayoutFile(data)
		if len(data) < 0x1000 {
			data = append(data, make([]byte, 0x1000-len(data))...)
		}
		im, err := Open(context.Background(), Flat{Base: 0x10000, Data: data}, 0x10000)
		if err != nil {
			return
		}
		_, _ = im.Exports(context.Background())
		_, _ = im.CodeView(context.Background())
	})
}
