package qmp

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/amd64"
)

func TestDecodeMessage(t *testing.T) {
	m, err := DecodeMessage([]byte(`{"return": {"status": "paused"}, "id": 7}` + "\r\n"))
	require.NoError(t, err)
	require.Equal(t, KindReturn, m.Kind)
	require.JSONEq(t, `{"status":"paused"}`, string(m.Return))
	require.Equal(t, "7", string(m.ID))

	m, err = DecodeMessage([]byte(`{"id": 3, "error": {"class": "CommandNotFound", "desc": "The command x has not been found"}}`))
	require.NoError(t, err)
	require.Equal(t, KindError, m.Kind)
	require.Equal(t, &Error{Class: "CommandNotFound", Desc: "The command x has not been found"}, m.Err)

	m, err = DecodeMessage([]byte(`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}`))
	require.NoError(t, err)
	require.Equal(t, KindEvent, m.Kind)
	require.Equal(t, "RESET", m.Event.Name)
	require.EqualValues(t, 1700000000, m.Event.Time.Unix())
	require.JSONEq(t, `{"guest": false, "reason": "host-qmp-system-reset"}`, string(m.Event.Data))

	m, err = DecodeMessage([]byte(`{"QMP": {"version": {}, "capabilities": ["oob"]}}`))
	require.NoError(t, err)
	require.Equal(t, KindGreeting, m.Kind)

	m, err = DecodeMessage([]byte(`{"return": {}}`))
	require.NoError(t, err)
	require.Equal(t, KindReturn, m.Kind)
	require.Nil(t, m.ID)

	for _, bad := range []string{"", "[]", "{", `{"foo": 1}`, `{"event": 5}`, "null"} {
		_, err := DecodeMessage([]byte(bad))
		require.ErrorIs(t, err, ErrBadMessage, bad)
	}
}

// A 64-bit "info registers -a" in QEMU 7.2's layout, with distinct made-up values.
const sampleRegs = `
CPU#0
RAX=0000000000000001 RBX=0000000000000002 RCX=0000000000000003 RDX=0000000000000004
RSI=0000000000000005 RDI=0000000000000006 RBP=0000000000000007 RSP=fffff80000010000
R8 =0000000000000008 R9 =0000000000000009 R10=000000000000000a R11=000000000000000b
R12=000000000000000c R13=000000000000000d R14=000000000000000e R15=000000000000000f
RIP=fffff80000200010 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
ES =002b 0000000000000000 ffffffff 00cff300 DPL=3 DS   [-WA]
CS =0010 0000000000000000 00000000 00209b00 DPL=0 CS64 [-RA]
SS =0018 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]
DS =002b 0000000000000000 ffffffff 00cff300 DPL=3 DS   [-WA]
FS =0053 00007ff600000000 00003c00 0040f300 DPL=3 DS   [-WA]
GS =002b fffff80012345000 ffffffff 00c0f300 DPL=3 DS   [-WA]
LDT=0000 0000000000000000 0000ffff 00008200 DPL=0 LDT
TR =0040 fffff80000300000 00000067 00008b00 DPL=0 TSS64-busy
GDT=     fffff80000400000 0000007f
IDT=     fffff80000500000 00000fff
CR0=80050033 CR2=0000000000001234 CR3=00000000001ad000 CR4=000006f8
DR0=0000000000000011 DR1=0000000000000022 DR2=0000000000000033 DR3=0000000000000044 
DR6=00000000ffff0ff0 DR7=0000000000000401
EFER=0000000000000d01
FCW=027f FSW=3800 [ST=7] FTW=81 MXCSR=00001f80
FPR0=8000000000000000 3fff FPR1=0000000000000000 0000
FPR2=0000000000000000 0000 FPR3=0000000000000000 0000
FPR4=0000000000000000 0000 FPR5=0000000000000000 0000
FPR6=0000000000000000 0000 FPR7=0000000000000000 0000
XMM00=1111111111111111 2222222222222222 XMM01=0000000000000000 0000000000000000
XMM02=0000000000000000 0000000000000000 XMM03=0000000000000000 0000000000000000
XMM04=0000000000000000 0000000000000000 XMM05=0000000000000000 0000000000000000
XMM06=0000000000000000 0000000000000000 XMM07=0000000000000000 0000000000000000
XMM08=0000000000000000 0000000000000000 XMM09=0000000000000000 0000000000000000
XMM10=0000000000000000 0000000000000000 XMM11=0000000000000000 0000000000000000
XMM12=0000000000000000 0000000000000000 XMM13=0000000000000000 0000000000000000
XMM14=0000000000000000 0000000000000000 XMM15=0000000000000000 0000000000000000

CPU#1
EAX=00000000 EBX=00000000 ECX=00000000 EDX=00060fb1
ESI=00000000 EDI=00000000 EBP=00000000 ESP=00000000
EIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1
ES =0000 00000000 0000ffff 00009300
CS =f000 ffff0000 0000ffff 00009b00
SS =0000 00000000 0000ffff 00009300
DS =0000 00000000 0000ffff 00009300
FS =0000 00000000 0000ffff 00009300
GS =0000 00000000 0000ffff 00009300
LDT=0000 00000000 0000ffff 00008200
TR =0000 00000000 0000ffff 00008b00
GDT=     00000000 0000ffff
IDT=     00000000 0000ffff
CR0=60000010 CR2=00000000 CR3=00000000 CR4=00000000
DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 
DR6=00000000ffff0ff0 DR7=0000000000000400
EFER=0000000000000000
`

func TestParseInfoRegisters(t *testing.T) {
	cpus, err := ParseInfoRegisters(strings.ReplaceAll(sampleRegs, "\n", "\r\n"))
	require.NoError(t, err)
	require.Len(t, cpus, 2)
	r := cpus[0].Regs
	require.Equal(t, 0, cpus[0].CPU)
	require.Equal(t, amd64.HaveGPR|amd64.HaveDescriptors|amd64.HaveDebug, r.Have)
	require.EqualValues(t, 1, r.RAX)
	require.EqualValues(t, 8, r.R8)
	require.EqualValues(t, 0xf, r.R15)
	require.EqualValues(t, uint64(0xfffff80000200010), r.RIP)
	require.EqualValues(t, 0x246, r.RFLAGS)
	require.EqualValues(t, 0x10, r.CS)
	require.EqualValues(t, 0x53, r.FS)
	require.EqualValues(t, 0x7ff600000000, r.FSBase)
	require.EqualValues(t, uint64(0xfffff80012345000), r.GSBase)
	require.EqualValues(t, 0x40, r.TR)
	require.EqualValues(t, uint64(0xfffff80000400000), r.GDTRBase)
	require.EqualValues(t, 0x7f, r.GDTRLimit)
	require.EqualValues(t, uint64(0xfffff80000500000), r.IDTRBase)
	require.EqualValues(t, 0xfff, r.IDTRLimit)
	require.EqualValues(t, 0x80050033, r.CR0)
	require.EqualValues(t, 0x1234, r.CR2)
	require.EqualValues(t, 0x1ad000, r.CR3)
	require.EqualValues(t, 0x6f8, r.CR4)
	require.EqualValues(t, 0x11, r.DR0)
	require.EqualValues(t, 0x44, r.DR3)
	require.EqualValues(t, 0xffff0ff0, r.DR6)
	require.EqualValues(t, 0x401, r.DR7)
	require.EqualValues(t, 0xd01, r.EFER)
	require.EqualValues(t, 0x27f, r.FCW)
	require.EqualValues(t, 0x3800, r.FSW)
	require.EqualValues(t, 0x81, r.FTW)
	require.EqualValues(t, 0x1f80, r.MXCSR)
	require.Equal(t, [10]byte{0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f}, r.ST[0])
	require.Equal(t, [16]byte{0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11}, r.XMM[0])

	r1 := cpus[1].Regs
	require.Equal(t, 1, cpus[1].CPU)
	require.EqualValues(t, 0xfff0, r1.RIP)
	require.EqualValues(t, 0xf000, r1.CS)
	require.Equal(t, amd64.HaveDescriptors|amd64.HaveDebug, r1.Have, "no R8-R15 in 32-bit format: GPR not claimed")
}

func TestParseInfoRegistersRejects(t *testing.T) {
	for _, bad := range []string{"", "CPU#x\n", "CPU#0\nnothing here\n", "CPU#0\nGDT=     zz 00\n", "RAX=xyz\n", "FPR0=00\n", "CPU#99999\n"} {
		_, err := ParseInfoRegisters(bad)
		require.ErrorIs(t, err, ErrBadHMP, bad)
	}
}

const sampleMtree = `FlatView #0
 AS "I/O", root: io
 Root memory region: io
  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan

FlatView #1
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 Root memory region: system
  0000000000000000-000000000009ffff (prio 0, ram): mem
  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem
  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
  00000000000e0000-00000000000fffff (prio 0, rom): mem @00000000000e0000
  0000000000100000-00000000bfffffff (prio 0, ram): mem @0000000000100000
  00000000fee00000-00000000feefffff (prio 4096, i/o): apic-msi
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios
  0000000100000000-000000017fffffff (prio 0, ram): mem @00000000c0000000

FlatView #2
 AS "cpu-smm-0", root: memory
 Root memory region: memory
  0000000000000000-00000000000c2fff (prio 0, ram): pc.ram
`

func TestParseMemoryMap(t *testing.T) {
	rs, err := ParseMemoryMap(sampleMtree)
	require.NoError(t, err)
	require.Len(t, rs, 8)
	require.Equal(t, Region{Start: 0, End: 0xa0000, Prio: 0, Kind: "ram", Name: "mem"}, rs[0])
	require.Equal(t, Region{Start: 0xfee00000, End: 0xfef00000, Prio: 4096, Kind: "i/o", Name: "apic-msi"}, rs[5])
	require.Equal(t, Region{Start: 0x100000000, End: 0x180000000, Kind: "ram", Name: "mem", Offset: 0xc0000000}, rs[7])
	require.Equal(t, "mem", RAMBlock(rs))

	_, err = ParseMemoryMap("FlatView #0\n AS \"I/O\", root: io\n  0000-0007 (prio 0, i/o): dma\n")
	require.ErrorIs(t, err, ErrBadHMP)
	_, err = ParseMemoryMap("FlatView #0\n AS \"memory\", root: system\n  0010-0007 (prio 0, ram): x\n")
	require.ErrorIs(t, err, ErrBadHMP, "end before start")
	rs, err = ParseMemoryMap("FlatView #0\n AS \"memory\", root: system\n  0000000000000000-ffffffffffffffff (prio 0, i/o): all\n")
	require.NoError(t, err)
	require.EqualValues(t, ^uint64(0), rs[0].End, "the top of the address space saturates")
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add([]byte(`{"return": {}, "id": 1}`))
	f.Add([]byte(`{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}`))
	f.Add([]byte(`{"error": {"class": "GenericError", "desc": "x"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data)
		if err != nil {
			return
		}
		require.Contains(t, []Kind{KindReturn, KindError, KindEvent, KindGreeting}, m.Kind)
		if m.Kind == KindError {
			require.NotNil(t, m.Err)
		}
	})
}

func FuzzParseInfoRegisters(f *testing.F) {
	f.Add(sampleRegs)
	f.Add("CPU#0\nGDT=     fffff80000101000 00000017\n")
	f.Fuzz(func(t *testing.T, text string) {
		cpus, err := ParseInfoRegisters(text)
		if err != nil {
			return
		}
		require.NotEmpty(t, cpus)
		for _, c := range cpus {
			require.NotZero(t, c.Regs.Have)
		}
	})
}

func FuzzParseMemoryMap(f *testing.F) {
	f.Add(sampleMtree)
	f.Fuzz(func(t *testing.T, text string) {
		rs, err := ParseMemoryMap(text)
		if err != nil {
			return
		}
		for _, r := range rs {
			require.LessOrEqual(t, r.Start, r.End)
		}
	})
}
