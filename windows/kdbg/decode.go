package kdbg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Keys are the encoding parameters of windows-internals §5.2: N = KiWaitNever, W = KiWaitAlways, A = the address
// of KdpDataBlockEncoded.
type Keys struct{ N, W, A uint64 }

// Collapsed is the form the known-plaintext attack recovers: P = bswap64(rol64(E, R)) xor K.
type Collapsed struct {
	R uint
	K uint64
}

// Collapse turns full keys into the collapsed form.
func (k Keys) Collapse() Collapsed {
	r := uint(k.N & 63)
	return Collapsed{R: r, K: bits.ReverseBytes64(bits.RotateLeft64(k.N, int(r))^k.A) ^ k.W}
}

// Word decodes one encoded qword.
func (c Collapsed) Word(e uint64) uint64 {
	return bits.ReverseBytes64(bits.RotateLeft64(e, int(c.R))) ^ c.K
}

// DecodeWithKeys applies the five-step formula of §5.2 to every whole qword of enc.
func DecodeWithKeys(enc []byte, k Keys) []byte {
	out := make([]byte, len(enc)&^7)
	for i := 0; i+8 <= len(enc); i += 8 {
		v := binary.LittleEndian.Uint64(enc[i:]) ^ k.N
		v = bits.RotateLeft64(v, int(k.N&0xFF))
		v ^= k.A
		v = bits.ReverseBytes64(v)
		binary.LittleEndian.PutUint64(out[i:], v^k.W)
	}
	return out
}

// Encode is the inverse of DecodeWithKeys: what the kernel does to the plaintext at boot.
func Encode(plain []byte, k Keys) []byte {
	out := make([]byte, len(plain)&^7)
	for i := 0; i+8 <= len(plain); i += 8 {
		v := binary.LittleEndian.Uint64(plain[i:]) ^ k.W
		v = bits.ReverseBytes64(v)
		v ^= k.A
		v = bits.RotateLeft64(v, -int(k.N&0xFF))
		binary.LittleEndian.PutUint64(out[i:], v^k.N)
	}
	return out
}

// ErrNotKDBG means the bytes decode to no plausible KDBG for the given kernel base.
var ErrNotKDBG = errors.New("not a KDBG for this kernel")

// Candidate is the outcome of recognising a block.
type Candidate struct {
	Encoded bool
	Size    uint32
	Key     Collapsed // meaningful only when Encoded
}

// sizeOK accepts the known sizes, and any other qword-multiple between the 2003 and the largest known block,
// so that a future Windows release with a new size is still found (the KernBase word makes a false hit
// vanishingly unlikely: 64 bits must match).
func sizeOK(size uint32) bool {
	return size%8 == 0 && size >= 0x290 && size <= MaxSize
}

// Recognize decides from the first 0x20 bytes at a candidate address whether a KDBG for kernBase starts there,
// plain or encoded, and recovers the encoding if so. It is the known-plaintext attack of §5.3: the plaintext of
// qword 2 is 'KDBG' | Size<<32 and that of qword 3 is KernBase, so for the right rotation r,
// bswap(rol(E2^E3, r)) == P2^P3; trying the 64 rotations recovers r and Size, then K follows from either word.
func Recognize(head []byte, kernBase uint64) (Candidate, error) {
	if len(head) < 0x20 {
		return Candidate{}, fmt.Errorf("recognise KDBG: %w: %d bytes", ErrShort, len(head))
	}
	e2 := binary.LittleEndian.Uint64(head[0x10:])
	e3 := binary.LittleEndian.Uint64(head[0x18:])
	if uint32(e2) == Tag && e3 == kernBase && sizeOK(uint32(e2>>32)) {
		return Candidate{Size: uint32(e2 >> 32)}, nil
	}
	d := e2 ^ e3
	for r := uint(0); r < 64; r++ {
		p2 := bits.ReverseBytes64(bits.RotateLeft64(d, int(r))) ^ kernBase
		if uint32(p2) != Tag || !sizeOK(uint32(p2>>32)) {
			continue
		}
		c := Collapsed{R: r}
		c.K = (p2) ^ bits.ReverseBytes64(bits.RotateLeft64(e2, int(r)))
		if c.Word(e3) != kernBase {
			continue
		}
		return Candidate{Encoded: true, Size: uint32(p2 >> 32), Key: c}, nil
	}
	return Candidate{}, ErrNotKDBG
}

// Decode returns the plaintext of a block recognised by Recognize; raw must hold at least cand.Size bytes.
func Decode(raw []byte, cand Candidate) (Block, error) {
	if uint64(len(raw)) < uint64(cand.Size) {
		return nil, fmt.Errorf("decode KDBG: %w: have %#x bytes, Size %#x", ErrShort, len(raw), cand.Size)
	}
	out := make([]byte, cand.Size)
	if !cand.Encoded {
		copy(out, raw)
		return out, nil
	}
	for i := 0; i+8 <= int(cand.Size); i += 8 {
		binary.LittleEndian.PutUint64(out[i:], cand.Key.Word(binary.LittleEndian.Uint64(raw[i:])))
	}
	return out, nil
}

// Validate applies the structural checks of §5.3 to a plaintext block: canonical kernel list links, the
// kernel base, and (where the block is long enough) the KPCR layout constants every x64 build shares.
func Validate(b Block, kernBase uint64) error {
	if b.Tag() != Tag {
		return fmt.Errorf("%w: tag %#x", ErrNotKDBG, b.Tag())
	}
	if int(b.Size()) != len(b) {
		return fmt.Errorf("%w: Size %#x but %#x bytes", ErrNotKDBG, b.Size(), len(b))
	}
	if b.KernBase() != kernBase {
		return fmt.Errorf("%w: KernBase %#x, want %#x", ErrNotKDBG, b.KernBase(), kernBase)
	}
	for _, off := range []int{OffListFlink, OffListBlink, OffPsLoadedModuleList, OffPsActiveProcessHead} {
		if v := b.Must64(off); v>>47 != 0x1FFFF {
			return fmt.Errorf("%w: field %#x = %#x is not a kernel address", ErrNotKDBG, off, v)
		}
	}
	if len(b) >= 0x2E8 {
		if v := b.Must16(OffOffsetPcrContainedPrcb); v != 0x180 && v != 0x120 { // x64, x86
			return fmt.Errorf("%w: OffsetPcrContainedPrcb %#x, want 0x180 or 0x120", ErrNotKDBG, v)
		}
	}
	return nil
}
