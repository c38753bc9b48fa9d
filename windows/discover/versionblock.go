package discover

import (
	"context"
	"encoding/binary"

	"github.com/kdstub/kdstub/windows/pe"
)

// maxSectionScan bounds how much of one (guest-described, so possibly hostile) section a scan visits; the
// largest ntoskrnl section, PAGE, is about 4 MiB.
const maxSectionScan = 64 << 20

// forEachDataPage calls fn for every resident page of a section, in order, with the page's RVA and bytes.
func forEachDataPage(ctx context.Context, im *pe.Image, s pe.Section, fn func(rva uint32, page []byte) bool) {
	buf := make([]byte, 0x1000)
	size := min(s.Size(), maxSectionScan)
	for rva := s.VirtualAddress; rva-s.VirtualAddress < size && rva >= s.VirtualAddress; rva += 0x1000 {
		if ctx.Err() != nil {
			return
		}
		if err := im.ReadRVA(ctx, rva, buf); err != nil {
			continue
		}
		if !fn(rva, buf) {
			return
		}
	}
}

// findVersionBlock scans .data for DBGKD_GET_VERSION64 (windows-internals §3.2) and returns its VA.
func findVersionBlock(ctx context.Context, k *Kernel) (uint64, []byte) {
	data, ok := k.Image.Section(".data")
	if !ok {
		return 0, nil
	}
	inData := func(va uint64) bool {
		return va >= k.Base+uint64(data.VirtualAddress) && va-k.Base-uint64(data.VirtualAddress) < uint64(data.Size())
	}
	// Blocks may straddle a page boundary, so keep the previous page's tail.
	var prev []byte
	var prevRVA uint32
	var found uint64
	var block []byte
	forEachDataPage(ctx, k.Image, data, func(rva uint32, page []byte) bool {
		win := page
		base := rva
		if prev != nil && prevRVA+0x1000 == rva {
			win = append(append([]byte(nil), prev[0x1000-0x28:]...), page...)
			base = rva - 0x28
		}
		for off := 0; off+0x28 <= len(win); off += 8 {
			b := win[off : off+0x28]
			major := binary.LittleEndian.Uint16(b[0:])
			if (major != 0xF && major != 0xC) || binary.LittleEndian.Uint16(b[8:]) != 0x8664 || b[4] != 6 {
				continue
			}
			if k.Build != 0 && uint32(binary.LittleEndian.Uint16(b[2:])) != k.Build {
				continue
			}
			if binary.LittleEndian.Uint16(b[6:])&0x6 != 0x6 || binary.LittleEndian.Uint64(b[0x10:]) != k.Base {
				continue
			}
			if k.PsLoadedModuleList != 0 && binary.LittleEndian.Uint64(b[0x18:]) != k.PsLoadedModuleList {
				continue
			}
			if !inData(binary.LittleEndian.Uint64(b[0x20:])) {
				continue
			}
			found = k.Base + uint64(base) + uint64(off)
			block = append([]byte(nil), b...)
			return false
		}
		prev = append(prev[:0], page...)
		prevRVA = rva
		return true
	})
	return found, block
}
