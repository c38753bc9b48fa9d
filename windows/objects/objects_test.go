package objects

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"unicode/utf16"

	"github.com/stretchr/testify/require"
)

// vmem is a sparse VA-addressed memory for tests.
type vmem map[uint64][]byte

var errUnmapped = errors.New("unmapped")

func (m vmem) write(va uint64, data []byte) {
	for len(data) > 0 {
		p, ok := m[va&^0xFFF]
		if !ok {
			p = make([]byte, 0x1000)
			m[va&^0xFFF] = p
		}
		n := copy(p[va&0xFFF:], data)
		data, va = data[n:], va+uint64(n)
	}
}

func (m vmem) put64(va, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	m.write(va, b[:])
}

func (m vmem) ReadVirtual(_ context.Context, va uint64, buf []byte) error {
	for done := 0; done < len(buf); {
		cur := va + uint64(done)
		p, ok := m[cur&^0xFFF]
		if !ok {
			return errUnmapped
		}
		done += copy(buf[done:], p[cur&0xFFF:])
	}
	return nil
}

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func TestWalkListBounds(t *testing.T) {
	ctx := context.Background()
	const head = 0xFFFF800000001000
	m := vmem{}
	// head → a → b → head
	m.put64(head, head+0x100)
	m.put64(head+0x100, head+0x200)
	m.put64(head+0x200, head)
	var got []uint64
	require.NoError(t, WalkList(ctx, m, head, 8, 0, func(l uint64) error { got = append(got, l); return nil }))
	require.Equal(t, []uint64{head + 0x100, head + 0x200}, got)

	// A cycle that never returns to the head.
	m.put64(head+0x200, head+0x100)
	err := WalkList(ctx, m, head, 8, 0, func(uint64) error { return nil })
	require.ErrorIs(t, err, ErrCycle)

	// A long chain cut by the bound.
	m2 := vmem{}
	m2.put64(head, head+8)
	for i := uint64(1); i < 100; i++ {
		m2.put64(head+8*i, head+8*(i+1))
	}
	m2.put64(head+800, head)
	require.NoError(t, WalkList(ctx, m2, head, 8, 0, func(uint64) error { return nil }))
	err = WalkList(ctx, m2, head, 8, 10, func(uint64) error { return nil })
	require.ErrorIs(t, err, ErrTooLong)

	// A broken link.
	m2.put64(head+400, 0xFFFF900000000000)
	err = WalkList(ctx, m2, head, 8, 0, func(uint64) error { return nil })
	require.ErrorIs(t, err, errUnmapped)

	// 32-bit links.
	m3 := vmem{}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], 0x80001100)
	m3.write(0x80001000, b[:])
	binary.LittleEndian.PutUint32(b[:], 0x80001000)
	m3.write(0x80001100, b[:])
	got = nil
	require.NoError(t, WalkList(ctx, m3, 0x80001000, 4, 0, func(l uint64) error { got = append(got, l); return nil }))
	require.Equal(t, []uint64{0x80001100}, got)
}

func TestReadUnicodeStringClampsAndDecodes(t *testing.T) {
	ctx := context.Background()
	m := vmem{}
	s := `\SystemRoot\system32\ntoskrnl.exe`
	m.write(0x2000, utf16le(s))
	us := make([]byte, 16)
	binary.LittleEndian.PutUint16(us, uint16(2*len(s)))
	binary.LittleEndian.PutUint16(us[2:], uint16(2*len(s)+2))
	binary.LittleEndian.PutUint64(us[8:], 0x2000)
	m.write(0x1000, us)
	got, err := ReadUnicodeString(ctx, m, 0x1000, 8)
	require.NoError(t, err)
	require.Equal(t, s, got)

	// A lying Length is clamped to MaxStringBytes instead of reading 64 KiB.
	m.write(0x10000, make([]byte, 2*MaxStringBytes))
	binary.LittleEndian.PutUint16(us, 0xFFFF)
	binary.LittleEndian.PutUint64(us[8:], 0x10000)
	m.write(0x1000, us)
	got, err = ReadUnicodeString(ctx, m, 0x1000, 8)
	require.NoError(t, err)
	require.Len(t, []rune(got), MaxStringBytes/2)

	// x86 layout and an odd length.
	us32 := make([]byte, 8)
	binary.LittleEndian.PutUint16(us32, 7)
	binary.LittleEndian.PutUint32(us32[4:], 0x2000)
	m.write(0x3000, us32)
	got, err = ReadUnicodeString(ctx, m, 0x3000, 4)
	require.NoError(t, err)
	require.Equal(t, `\Sy`, got)

	// An unpaired surrogate decodes to U+FFFD rather than failing.
	require.Equal(t, "\uFFFDa", DecodeUTF16([]byte{0x00, 0xD8, 'a', 0}))
}

func TestDecodeGetter(t *testing.T) {
	cases := []struct {
		code []byte
		want uint32
		ok   bool
	}{
		{[]byte{0x48, 0x8B, 0x81, 0x40, 0x04, 0, 0, 0xC3}, 0x440, true}, // mov rax,[rcx+440h]; ret (PsGetProcessId)
		{[]byte{0x48, 0x8D, 0x81, 0xA8, 0x05, 0, 0, 0xC3}, 0x5A8, true}, // lea rax,[rcx+5A8h]; ret
		{[]byte{0x48, 0x8B, 0x81, 0x40, 0x04, 0, 0, 0x90}, 0, false},    // no ret
		{[]byte{0x48, 0x8B, 0x82, 0x40, 0x04, 0, 0, 0xC3}, 0, false},    // [rdx+..]
		{[]byte{0xE9, 0, 0, 0, 0}, 0, false},                            // hooked: jmp
		{nil, 0, false},
	}
	for _, c := range cases {
		got, ok := DecodeGetter(c.code)
		require.Equal(t, c.ok, ok, "%x", c.code)
		require.Equal(t, c.want, got)
	}
}

func TestKernelModulesAndSharedData(t *testing.T) {
	ctx := context.Background()
	m := vmem{}
	const head = 0xFFFFF80000010000
	const e1, e2 = 0xFFFFA00000001000, 0xFFFFA00000002000
	m.put64(head, e1)
	m.put64(head+8, e2)
	for i, e := range []uint64{e1, e2} {
		next := uint64(head)
		if i == 0 {
			next = e2
		}
		m.put64(e, next)
		m.put64(e+0x30, 0xFFFFF80400000000+uint64(i)<<21)
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], 0x1000*uint32(i+1))
		m.write(e+0x40, b[:])
		name := []string{"ntoskrnl.exe", "hal.dll"}[i]
		buf := e + 0x800
		m.write(buf, utf16le(name))
		us := make([]byte, 16)
		binary.LittleEndian.PutUint16(us, uint16(2*len(name)))
		binary.LittleEndian.PutUint64(us[8:], buf)
		m.write(e+0x58, us)
		m.write(e+0x48, us)
		binary.LittleEndian.PutUint32(b[:], 0x12345678+uint32(i))
		m.write(e+0x9C, b[:])
	}
	mods, err := KernelModules(ctx, m, head)
	require.NoError(t, err)
	require.Len(t, mods, 2)
	require.Equal(t, "ntoskrnl.exe", mods[0].Name)
	require.Equal(t, "hal.dll", mods[1].FullName)
	require.EqualValues(t, 0x2000, mods[1].Size)
	require.EqualValues(t, 0x12345679, mods[1].TimeDateStamp)

	sd := make([]byte, 0x3C8)
	binary.LittleEndian.PutUint32(sd[0x260:], 19041)
	binary.LittleEndian.PutUint32(sd[0x26C:], 10)
	binary.LittleEndian.PutUint32(sd[0x3C0:], 4)
	copy(sd[0x30:], utf16le(`C:\Windows`))
	m.write(KUserSharedData, sd)
	s, err := ReadSharedData(ctx, m, KUserSharedData)
	require.NoError(t, err)
	require.EqualValues(t, 19041, s.NtBuildNumber)
	require.EqualValues(t, 10, s.NtMajorVersion)
	require.EqualValues(t, 4, s.ActiveProcessorCount)
	require.Equal(t, `C:\Windows`, s.NtSystemRoot)
}

func TestDetectOffsetsRejectsNonSystem(t *testing.T) {
	_, err := DetectOffsets(context.Background(), Probe{Buf: make([]byte, 0x800)})
	require.ErrorIs(t, err, ErrNotSystem)
	b := make([]byte, 0x800)
	b[0] = 3
	_, err = DetectOffsets(context.Background(), Probe{Buf: b})
	require.ErrorIs(t, err, ErrNotSystem)
}
