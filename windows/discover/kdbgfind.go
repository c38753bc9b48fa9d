package discover

import (
	"context"
	"errors"
	"fmt"

	"github.com/kdstub/kdstub/windows/kdbg"
	"github.com/kdstub/kdstub/windows/objects"
	"github.com/kdstub/kdstub/windows/pe"
)

// readKDBGAt recognises, reads and decodes a KDBG candidate at va.
func readKDBGAt(ctx context.Context, k *Kernel, va uint64) (kdbg.Block, kdbg.Candidate, error) {
	head := make([]byte, 0x20)
	if err := k.Space.ReadVirtual(ctx, va, head); err != nil {
		return nil, kdbg.Candidate{}, fmt.Errorf("read KDBG header at %#x: %w", va, err)
	}
	cand, err := kdbg.Recognize(head, k.Base)
	if err != nil {
		return nil, cand, fmt.Errorf("KDBG at %#x: %w", va, err)
	}
	raw := make([]byte, cand.Size)
	if err := k.Space.ReadVirtual(ctx, va, raw); err != nil {
		return nil, cand, fmt.Errorf("read %#x-byte KDBG at %#x: %w", cand.Size, va, err)
	}
	b, err := kdbg.Decode(raw, cand)
	if err != nil {
		return nil, cand, err
	}
	if err := kdbg.Validate(b, k.Base); err != nil {
		return nil, cand, fmt.Errorf("KDBG at %#x: %w", va, err)
	}
	return b, cand, nil
}

// findKDBG locates and decodes the KDBG: through KdVersionBlock.DebuggerDataList when known, else by sliding the
// known-plaintext test over .data. The KdCopyDataBlock code pattern is then tried as an independent second
// method (and as the source of the key addresses).
func findKDBG(ctx context.Context, k *Kernel) error {
	var via string
	if k.KdpDebuggerDataListHead != 0 {
		flink, err := objects.ReadU64(ctx, k.Space, k.KdpDebuggerDataListHead)
		if err == nil {
			if b, cand, err := readKDBGAt(ctx, k, flink); err == nil {
				k.setKDBG(flink, b, cand)
				via = "KdVersionBlock.DebuggerDataList → Flink"
			} else {
				k.Warnings = append(k.Warnings, err.Error())
			}
		}
	}
	if via == "" {
		if data, ok := k.Image.Section(".data"); ok {
			va, b, cand := scanDataForKDBG(ctx, k, data)
			if va != 0 {
				k.setKDBG(va, b, cand)
				via = "scan of .data"
			}
		}
	}
	// Second method: KdCopyDataBlock in executable, non-discardable sections.
	var pattern *kdbg.CopyDataBlock
	for _, s := range k.Image.Sections {
		if s.Characteristics&pe.SectionExecute == 0 || s.Characteristics&pe.SectionDiscardable != 0 || s.Size() > 64<<20 {
			continue
		}
		code := make([]byte, 0, s.Size())
		forEachDataPage(ctx, k.Image, s, func(rva uint32, page []byte) bool {
			// Unresident pages become zeros so RIP-relative targets stay right.
			for len(code) < int(rva-s.VirtualAddress) {
				code = append(code, 0)
			}
			code = append(code, page...)
			return true
		})
		ms := kdbg.FindCopyDataBlock(code, k.Base+uint64(s.VirtualAddress), k.KDBG)
		if len(ms) > 0 {
			pattern = &ms[0]
			break
		}
	}
	if pattern != nil {
		k.KdpDataBlockEncoded, k.KiWaitNever, k.KiWaitAlways = pattern.KdpDataBlockEncoded, pattern.KiWaitNever, pattern.KiWaitAlways
		k.method("KdCopyDataBlock", fmt.Sprintf("code pattern at %#x", pattern.Function))
		if via == "" {
			if b, cand, err := readKDBGAt(ctx, k, pattern.KdDebuggerDataBlock); err == nil {
				k.setKDBG(pattern.KdDebuggerDataBlock, b, cand)
				via = "KdCopyDataBlock code pattern (lea target)"
			}
		} else {
			via += "; confirmed by the KdCopyDataBlock code pattern"
		}
		if k.KDBGEncoded {
			if err := k.confirmKeys(ctx); err != nil {
				k.Warnings = append(k.Warnings, err.Error())
			} else {
				via += " and its keys"
			}
		}
	}
	if via == "" {
		return errors.New("KDBG not found (no KdVersionBlock link, no .data match, no KdCopyDataBlock pattern)")
	}
	how := "plain"
	if k.KDBGEncoded {
		how = "encoded; decoded by known plaintext ('KDBG'|Size, KernBase)"
	}
	k.method("KDBG", via+" ("+how+")")
	return nil
}

func (k *Kernel) setKDBG(va uint64, b kdbg.Block, cand kdbg.Candidate) {
	k.KDBG, k.KDBGPlaintext, k.KDBGEncoded, k.KDBGKey = va, b, cand.Encoded, cand.Key
}

// confirmKeys decodes the block a second way, with N, W and A read from the addresses the code pattern gave,
// and checks that both plaintexts agree.
func (k *Kernel) confirmKeys(ctx context.Context) error {
	n, err1 := objects.ReadU64(ctx, k.Space, k.KiWaitNever)
	w, err2 := objects.ReadU64(ctx, k.Space, k.KiWaitAlways)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("read KiWaitNever/KiWaitAlways: %w", err)
	}
	raw := make([]byte, len(k.KDBGPlaintext))
	if err := k.Space.ReadVirtual(ctx, k.KDBG, raw); err != nil {
		return fmt.Errorf("re-read KDBG: %w", err)
	}
	dec := kdbg.DecodeWithKeys(raw, kdbg.Keys{N: n, W: w, A: k.KdpDataBlockEncoded})
	if string(dec) != string(k.KDBGPlaintext) {
		return errors.New("KDBG decoded with the KdCopyDataBlock keys differs from the known-plaintext result")
	}
	return nil
}

// scanDataForKDBG slides the known-plaintext recogniser over .data (windows-internals §5.3, "KDBG finder").
func scanDataForKDBG(ctx context.Context, k *Kernel, data pe.Section) (uint64, kdbg.Block, kdbg.Candidate) {
	var hit uint64
	var block kdbg.Block
	var cand kdbg.Candidate
	var prev []byte
	var prevRVA uint32
	forEachDataPage(ctx, k.Image, data, func(rva uint32, page []byte) bool {
		win, base := page, rva
		if prev != nil && prevRVA+0x1000 == rva {
			win = append(append([]byte(nil), prev[0x1000-0x20:]...), page...)
			base = rva - 0x20
		}
		for off := 0; off+0x20 <= len(win); off += 8 {
			if _, err := kdbg.Recognize(win[off:off+0x20], k.Base); err != nil {
				continue
			}
			va := k.Base + uint64(base) + uint64(off)
			if b, c, err := readKDBGAt(ctx, k, va); err == nil {
				hit, block, cand = va, b, c
				return false
			}
		}
		prev = append(prev[:0], page...)
		prevRVA = rva
		return true
	})
	return hit, block, cand
}
