package objects

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestUserModulesWOW64 builds a PEB64 with one module and a PEB32 with two, in one address space.
func TestUserModulesWOW64(t *testing.T) {
	ctx := context.Background()
	m := vmem{}
	put32 := func(va uint64, v uint32) {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		m.write(va, b[:])
	}
	str64 := func(at, buf uint64, s string) {
		m.write(buf, utf16le(s))
		us := make([]byte, 16)
		binary.LittleEndian.PutUint16(us, uint16(2*len(s)))
		binary.LittleEndian.PutUint64(us[8:], buf)
		m.write(at, us)
	}
	str32 := func(at, buf uint64, s string) {
		m.write(buf, utf16le(s))
		us := make([]byte, 8)
		binary.LittleEndian.PutUint16(us, uint16(2*len(s)))
		binary.LittleEndian.PutUint32(us[4:], uint32(buf))
		m.write(at, us)
	}
	// PEB64 at 0x7FF000, Ldr at 0x7FE000, one entry at 0x7FD000.
	const peb, ldr, e = 0x7FF000, 0x7FE000, 0x7FD000
	m.put64(peb+0x18, ldr)
	m.put64(ldr+0x10, e)
	m.put64(e, ldr+0x10)
	m.put64(e+0x30, 0x7FFE_1000_0000)
	put32(e+0x40, 0x1F0000)
	str64(e+0x48, e+0x400, `C:\Windows\System32\ntdll.dll`)
	str64(e+0x58, e+0x500, "ntdll.dll")
	// PEB32 at 0x600000, Ldr32 at 0x601000, entries at 0x602000 and 0x603000.
	const peb32, ldr32, a, b = 0x600000, 0x601000, 0x602000, 0x603000
	put32(peb32+0xC, ldr32)
	put32(ldr32+0xC, a)
	put32(a, b)
	put32(b, ldr32+0xC)
	for i, ent := range []uint64{a, b} {
		put32(ent+0x18, 0x400000+uint32(i)*0x100000)
		put32(ent+0x20, 0x5000)
		name := []string{"app.exe", "ntdll.dll"}[i]
		str32(ent+0x24, ent+0x400, `C:\x86\`+name)
		str32(ent+0x2C, ent+0x500, name)
	}
	mods, err := UserModules(ctx, m, peb, peb32)
	require.NoError(t, err)
	require.Len(t, mods, 3)
	require.Equal(t, "ntdll.dll", mods[0].Name)
	require.False(t, mods[0].WOW64)
	require.EqualValues(t, 0x7FFE_1000_0000, mods[0].Base)
	require.Equal(t, "app.exe", mods[1].Name)
	require.True(t, mods[1].WOW64)
	require.EqualValues(t, 0x400000, mods[1].Base)
	require.Equal(t, `C:\x86\ntdll.dll`, mods[2].FullName)
	require.EqualValues(t, 0x5000, mods[2].Size)
}
