package kdbg

import (
	"encoding/binary"
	"testing"

	"github.com/kdstub/kdstub/internal/shareddata"
)

// FuzzDecode runs recognition, decoding and validation on hostile blocks.
func FuzzDecode(f *testing.F) {
	if _, err := shareddata.Path("testdata/dumps/win10-19041-x64-triage.dmp"); err == nil {
		plain := triageKDBG(f)
		f.Add([]byte(plain), plain.KernBase())
		f.Add(Encode(plain, Keys{N: 0x1234567, W: 0x89ABCDEF, A: plain.KernBase() + 0xC50D00}), plain.KernBase())
	}
	f.Add(make([]byte, 0x20), uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, base uint64) {
		cand, err := Recognize(data, base)
		if err != nil {
			return
		}
		b, err := Decode(data, cand)
		if err != nil {
			return
		}
		if _ = Validate(b, base); len(b) >= 0x20 && binary.LittleEndian.Uint64(b[OffKernBase:]) != base {
			t.Fatalf("recognised block decodes to KernBase %#x, want %#x", b.KernBase(), base)
		}
	})
}

// FuzzFindCopyDataBlock disassembles hostile code.
func FuzzFindCopyDataBlock(f *testing.F) {
	f.Add(kdCopyDataBlockCode, uint64(0xFFFFF80400510000))
	f.Fuzz(func(t *testing.T, code []byte, va uint64) {
		_ = FindCopyDataBlock(code, va, 0)
	})
}
