// Package objects walks Windows kernel and loader structures — processes, threads, kernel and user modules,
// KUSER_SHARED_DATA — over any machine.VirtualMemory, so the same code serves a live guest, a raw image and the
// VA-addressed blocks of a triage dump.
//
// Everything read here is guest-controlled: list walks stop at a cycle or a count, strings are clamped.
package objects

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf16"

	"github.com/kdstub/kdstub/windows/machine"
)

// MaxListEntries bounds every LIST_ENTRY walk.
const MaxListEntries = 1 << 14

// MaxStringBytes clamps UNICODE_STRING reads (MaximumLength is a u16 anyway, but Length may lie).
const MaxStringBytes = 0x1000

// ErrCycle reports a list that loops back somewhere other than its head.
var ErrCycle = errors.New("list cycle")

// ErrTooLong reports a list longer than the walk's bound.
var ErrTooLong = errors.New("list too long")

// ReadU64 reads a little-endian qword.
func ReadU64(ctx context.Context, mem machine.VirtualMemory, va uint64) (uint64, error) {
	var b [8]byte
	if err := mem.ReadVirtual(ctx, va, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// ReadU32 reads a little-endian dword.
func ReadU32(ctx context.Context, mem machine.VirtualMemory, va uint64) (uint32, error) {
	var b [4]byte
	if err := mem.ReadVirtual(ctx, va, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

// ReadPtr reads a pointer of the given width (8 or 4 bytes).
func ReadPtr(ctx context.Context, mem machine.VirtualMemory, va uint64, ptrSize int) (uint64, error) {
	if ptrSize == 4 {
		v, err := ReadU32(ctx, mem, va)
		return uint64(v), err
	}
	return ReadU64(ctx, mem, va)
}

// WalkList follows Flink pointers from the list head at head and calls fn with each entry's link address (not
// the containing record) until the list returns to head. It stops with ErrCycle if an entry repeats, ErrTooLong
// after max entries, and with fn's error if fn fails.
func WalkList(ctx context.Context, mem machine.VirtualMemory, head uint64, ptrSize, max int, fn func(link uint64) error) error {
	if max <= 0 || max > MaxListEntries {
		max = MaxListEntries
	}
	seen := map[uint64]bool{head: true}
	cur, err := ReadPtr(ctx, mem, head, ptrSize)
	if err != nil {
		return fmt.Errorf("read list head %#x: %w", head, err)
	}
	for n := 0; cur != head; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if n >= max {
			return fmt.Errorf("list at %#x: %w (more than %d entries)", head, ErrTooLong, max)
		}
		if seen[cur] {
			return fmt.Errorf("list at %#x: entry %#x repeats: %w", head, cur, ErrCycle)
		}
		if cur == 0 {
			return fmt.Errorf("list at %#x: NULL Flink after %d entries", head, n)
		}
		seen[cur] = true
		if err := fn(cur); err != nil {
			return err
		}
		next, err := ReadPtr(ctx, mem, cur, ptrSize)
		if err != nil {
			return fmt.Errorf("list at %#x: read Flink of entry %#x: %w", head, cur, err)
		}
		cur = next
	}
	return nil
}

// ReadUnicodeString reads a UNICODE_STRING structure at va (x64 layout when ptrSize is 8, x86/WOW64 when 4)
// and the UTF-16 buffer it points to, clamped to MaxStringBytes.
func ReadUnicodeString(ctx context.Context, mem machine.VirtualMemory, va uint64, ptrSize int) (string, error) {
	hdr := make([]byte, 16)
	size := 16
	if ptrSize == 4 {
		size = 8
	}
	if err := mem.ReadVirtual(ctx, va, hdr[:size]); err != nil {
		return "", fmt.Errorf("read UNICODE_STRING at %#x: %w", va, err)
	}
	length := int(binary.LittleEndian.Uint16(hdr))
	var buf uint64
	if ptrSize == 4 {
		buf = uint64(binary.LittleEndian.Uint32(hdr[4:]))
	} else {
		buf = binary.LittleEndian.Uint64(hdr[8:])
	}
	return ReadUTF16(ctx, mem, buf, length)
}

// ReadUTF16 reads length bytes of UTF-16LE at va (clamped, odd lengths rounded down) and decodes them.
func ReadUTF16(ctx context.Context, mem machine.VirtualMemory, va uint64, length int) (string, error) {
	length = min(length, MaxStringBytes) &^ 1
	if length == 0 {
		return "", nil
	}
	raw := make([]byte, length)
	if err := mem.ReadVirtual(ctx, va, raw); err != nil {
		return "", fmt.Errorf("read %d-byte string buffer at %#x: %w", length, va, err)
	}
	return DecodeUTF16(raw), nil
}

// DecodeUTF16 decodes little-endian UTF-16 (unpaired surrogates become U+FFFD).
func DecodeUTF16(raw []byte) string {
	u := make([]uint16, len(raw)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(raw[2*i:])
	}
	return string(utf16.Decode(u))
}

// cString returns the bytes up to the first NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// IsKernelPtr reports whether v looks like an x64 kernel-half canonical address.
func IsKernelPtr(v uint64) bool { return v>>47 == 0x1FFFF }

// IsUserPtr reports whether v is a non-NULL x64 user-half address.
func IsUserPtr(v uint64) bool { return v != 0 && v < 0x0000_8000_0000_0000 }
