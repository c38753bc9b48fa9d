package target

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/kdproto"
)

func sampleRegisters() amd64.Registers {
	r := amd64.Registers{
		RAX: 1, RBX: 2, RCX: 3, RDX: 4, RSI: 5, RDI: 6, RBP: 7, RSP: 0xfffff80000101000,
		R8: 8, R9: 9, R10: 10, R11: 11, R12: 12, R13: 13, R14: 14, R15: 15,
		RIP: 0xfffff80000100123, RFLAGS: 0x202,
		CS: 0x10, SS: 0x18, DS: 0x2b, ES: 0x2b, FS: 0x53, GS: 0x2b,
		GSBase: 0xfffff80000101140, KernelGSBase: 0xdeadbeef00, FSBase: 0x7ff712340000,
		CR0: 0x80050033, CR2: 0x1234, CR3: 0x1ab000, CR4: 0x406f8, CR8: 0, EFER: 0xd01,
		GDTRBase: 0xfffff80000102000, GDTRLimit: 0x7f, IDTRBase: 0xfffff80000103000, IDTRLimit: 0xfff, TR: 0x40,
		FCW: 0x27f, MXCSR: 0x1f80, MXCSRMask: 0xffff,
		Have: amd64.HaveGPR | amd64.HaveBases | amd64.HaveControl | amd64.HaveDescriptors | amd64.HaveFloat,
	}
	r.XMM[3][0] = 0x42
	r.ST[1][9] = 0x40
	return r
}

func TestContextFromRegistersMapsEveryField(t *testing.T) {
	r := sampleRegisters()
	d := debugRegs{dr: [4]uint64{0x10, 0x20, 0x30, 0x40}, dr6: dr6Reset, dr7: 0x401}
	c := contextFromRegisters(&r, &d)
	require.Equal(t, kdproto.ContextAll, c.ContextFlags)
	require.Equal(t, r.RIP, c.Rip)
	require.Equal(t, r.RSP, c.Rsp)
	require.Equal(t, r.R15, c.R15)
	require.Equal(t, uint32(0x202), c.EFlags)
	require.Equal(t, uint16(0x10), c.SegCs)
	require.Equal(t, uint16(0x53), c.SegFs)
	require.Equal(t, uint32(0x1f80), c.MxCsr)
	require.Equal(t, uint32(0x1f80), c.FltSave.MxCsr)
	require.Equal(t, uint16(0x27f), c.FltSave.ControlWord)
	require.Equal(t, byte(0x42), c.FltSave.XMMRegisters[3][0])
	require.Equal(t, byte(0x40), c.FltSave.FloatRegisters[1][9])
	require.Equal(t, uint64(0x30), c.Dr2)
	require.Equal(t, uint64(0x401), c.Dr7)
	b, err := c.MarshalBinary()
	require.NoError(t, err)
	require.Len(t, b, kdproto.ContextSize)
}

func TestContextWithoutSelectorsServesKernelSelectors(t *testing.T) {
	r := sampleRegisters()
	r.CS, r.SS, r.DS = 0, 0, 0
	c := contextFromRegisters(&r, &debugRegs{})
	require.Equal(t, uint16(0x10), c.SegCs)
	require.Equal(t, uint16(0x18), c.SegSs)
	require.Equal(t, uint16(0x2b), c.SegDs)
}

func TestApplyContextWritesOnlyChangedGroups(t *testing.T) {
	cases := []struct {
		name   string
		edit   func(c *kdproto.Context)
		groups amd64.Groups
		dr     bool
		trace  bool
		check  func(t *testing.T, r amd64.Registers, d debugRegs)
	}{
		{"unchanged echo", func(c *kdproto.Context) {}, 0, false, false, nil},
		{"rip", func(c *kdproto.Context) { c.Rip++ }, amd64.HaveGPR, false, false,
			func(t *testing.T, r amd64.Registers, _ debugRegs) {
				require.Equal(t, uint64(0xfffff80000100124), r.RIP)
			}},
		{"xmm", func(c *kdproto.Context) { c.FltSave.XMMRegisters[0][1] = 9 }, amd64.HaveFloat, false, false,
			func(t *testing.T, r amd64.Registers, _ debugRegs) { require.Equal(t, byte(9), r.XMM[0][1]) }},
		{"dr0 and dr7 go to the shadow", func(c *kdproto.Context) { c.Dr0, c.Dr7 = 0x1000, 0x401 }, 0, true, false,
			func(t *testing.T, _ amd64.Registers, d debugRegs) {
				require.Equal(t, uint64(0x1000), d.dr[0])
				require.Equal(t, uint64(0x401), d.dr7)
			}},
		{"TF becomes a trace request, never guest state", func(c *kdproto.Context) { c.EFlags |= amd64.RFLAGSTF }, 0, false, true,
			func(t *testing.T, r amd64.Registers, _ debugRegs) { require.Zero(t, r.RFLAGS&amd64.RFLAGSTF) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := sampleRegisters()
			d := resetDebugRegs()
			old := contextFromRegisters(&r, &d)
			c := *old
			tc.edit(&c)
			g, dr, trace := applyContext(old, &c, &r, &d)
			require.Equal(t, tc.groups, g)
			require.Equal(t, tc.dr, dr)
			require.Equal(t, tc.trace, trace)
			if tc.check != nil {
				tc.check(t, r, d)
			}
		})
	}
}

func TestKSpecialRoundTripAndApply(t *testing.T) {
	r := sampleRegisters()
	d := resetDebugRegs()
	k := kspecialFromRegisters(&r, &d)
	require.Equal(t, r.CR3, k.Cr3)
	require.Equal(t, r.IDTRBase, k.Idtr.Base)
	require.Equal(t, r.IDTRLimit, k.Idtr.Limit)
	require.Equal(t, r.GSBase, k.MsrGsBase)
	require.Equal(t, r.KernelGSBase, k.MsrGsSwap)
	require.Equal(t, uint64(dr7Reset), k.KernelDr7)
	for _, size := range []int{kdproto.KSpecialSizeWin7, kdproto.KSpecialSizeWin8, kdproto.KSpecialSizeWin10} {
		b, err := k.Encode(size)
		require.NoError(t, err)
		back, n, err := kdproto.DecodeKSpecialRegisters(b)
		require.NoError(t, err)
		require.Equal(t, size, n)
		require.Equal(t, k.Cr3, back.Cr3)
	}
	n := *k
	n.KernelDr1 = 0xfffff80000200000
	n.Cr4 = r.CR4 | 1<<16
	g, dr := applyKSpecial(k, &n, &r, &d)
	require.Equal(t, amd64.HaveControl, g)
	require.True(t, dr)
	require.Equal(t, n.KernelDr1, d.dr[1])
	g, dr = applyKSpecial(&n, &n, &r, &d)
	require.Zero(t, g)
	require.False(t, dr)
}

func TestDR7Decoding(t *testing.T) {
	cases := []struct {
		dr7  uint64
		slot int
		ok   bool
		want Breakpoint
	}{
		{0x400, 0, false, Breakpoint{}},
		{0x401, 0, true, Breakpoint{Kind: Hardware, Addr: 0x1000, Len: 1}},
		{0x400 | 1 | 1<<16 | 2<<18, 0, true, Breakpoint{Kind: WatchWrite, Addr: 0x1000, Len: 8}},
		{0x400 | 1<<2 | 3<<20 | 3<<22, 1, true, Breakpoint{Kind: WatchAccess, Addr: 0x1000, Len: 4}},
		{0x400 | 1<<7 | 1<<28 | 1<<30, 3, true, Breakpoint{Kind: WatchWrite, Addr: 0x1000, Len: 2}},
		{0x400 | 1<<4 | 2<<24, 2, false, Breakpoint{}}, // I/O breakpoints have no emulator equivalent
	}
	for _, tc := range cases {
		bp, ok := dr7Slot(tc.dr7, 0x1000, tc.slot)
		require.Equal(t, tc.ok, ok, "dr7 %#x slot %d", tc.dr7, tc.slot)
		require.Equal(t, tc.want, bp, "dr7 %#x slot %d", tc.dr7, tc.slot)
	}
}

func TestOverlay(t *testing.T) {
	plain := []byte("KDBGplaintext!!!")
	cases := []struct {
		name string
		base uint64
		n    int
		want string
	}{
		{"inside", 0x1004, 4, "plai"},
		{"straddles start", 0x0ffe, 6, "..KDBG"},
		{"straddles end", 0x100e, 4, "!!.."},
		{"disjoint", 0x2000, 4, "...."},
		{"covers", 0x0fff, 18, ".KDBGplaintext!!!."},
	}
	for _, tc := range cases {
		b := []byte(string(make([]byte, tc.n)))
		for i := range b {
			b[i] = '.'
		}
		overlay(b, tc.base, 0x1000, plain)
		require.Equal(t, tc.want, string(b), tc.name)
	}
	// Wrapping ranges are left alone rather than guessed.
	b := []byte{1, 2}
	overlay(b, ^uint64(0), 0, plain)
	require.Equal(t, []byte{1, 2}, b)
}

func TestKernelFactsDefaultsWithoutKDBG(t *testing.T) {
	var k *Kernel
	require.Equal(t, uint64(defaultPrcbCurrentThread), k.prcbCurrentThread())
	require.Equal(t, uint64(defaultPcrContainedPrcb), k.pcrContainedPrcb())
	require.Equal(t, 0xF0, k.kspecialSize())
	require.Equal(t, 0xE0, (&Kernel{Build: 9600}).kspecialSize())
	require.Equal(t, 0xD8, (&Kernel{Build: 7601}).kspecialSize())
	require.Error(t, (&Kernel{}).validate())
	require.Error(t, (&Kernel{KernBase: 1, KDBGPlain: []byte{1}}).validate())
}
