package debugger

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/windows/paging"
)

// guestMem serves virtual reads from a generated guest's RAM image through its kernel page tables, with
// writable overlays (a stack, patched bytes) on top.
type guestMem struct {
	as       *paging.AddressSpace
	overlays map[uint64][]byte
}

func (g *guestMem) ReadVirtual(ctx context.Context, va uint64, n int) ([]byte, error) {
	if n < 0 || n > 1<<20 {
		return nil, fmt.Errorf("bad length %d", n)
	}
	buf := make([]byte, n)
	err := g.as.ReadVirtual(ctx, va, buf)
	for base, b := range g.overlays {
		for i := range buf {
			if a := va + uint64(i); a >= base && a-base < uint64(len(b)) {
				buf[i] = b[a-base]
				if err != nil && i == 0 {
					err = nil // the overlay alone is enough for the start
				}
			}
		}
	}
	if err != nil {
		return nil, err
	}
	return buf, nil
}

type testGuest struct {
	m   *winguest.Manifest
	mem *guestMem
}

var (
	guestOnce sync.Once
	guestVal  *testGuest
	guestErr  error
)

// bytesPhys is guest-physical memory held in a byte slice.
type bytesPhys []byte

func (b bytesPhys) ReadPhysical(_ context.Context, pa uint64, buf []byte) error {
	if pa > uint64(len(b)) || uint64(len(buf)) > uint64(len(b))-pa {
		return fmt.Errorf("read %#x bytes at PA %#x: outside %#x bytes of RAM", len(buf), pa, len(b))
	}
	copy(buf, b[pa:])
	return nil
}

// loadGuest generates one fixture guest per test binary (pure Go, no QEMU) and keeps its RAM image in memory;
// the generated files are removed at once, so fuzz workers that are killed leave nothing behind.
func loadGuest(tb testing.TB) *testGuest {
	tb.Helper()
	guestOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kdstub-debugger-test-")
		if err != nil {
			guestErr = err
			return
		}
		defer os.RemoveAll(dir)
		g, err := winguest.Build(context.Background(), winguest.Options{Out: filepath.Join(dir, "g"), CPUs: 2, NoDisk: true, Seed: 5})
		if err != nil {
			guestErr = err
			return
		}
		ram, err := os.ReadFile(g.RAMImage)
		if err != nil {
			guestErr = err
			return
		}
		guestVal = &testGuest{m: g.Manifest, mem: &guestMem{as: paging.New(bytesPhys(ram), uint64(g.Manifest.KernelCR3), paging.ModeX64), overlays: map[uint64][]byte{}}}
	})
	require.NoError(tb, guestErr)
	return guestVal
}

// newTestEngine builds an engine without a KD client: memory from the guest, a fixed register context.
func newTestEngine(tb testing.TB, g *testGuest, c *kdproto.Context) *Engine {
	tb.Helper()
	mem := &guestMem{as: g.mem.as, overlays: map[uint64][]byte{}}
	e := &Engine{mem: mem, out: io.Discard, ctxCache: map[uint16]*kdproto.Context{0: c}}
	mods, err := loadModules(context.Background(), kernelMem{e}, uint64(g.m.Symbols["PsLoadedModuleList"]))
	require.NoError(tb, err)
	e.modules = mods
	return e
}

func TestModulesAndSymbols(t *testing.T) {
	g := loadGuest(t)
	e := newTestEngine(t, g, &kdproto.Context{})
	require.Len(t, e.modules, len(g.m.KernelModules))
	for i, km := range g.m.KernelModules {
		require.Equal(t, km.Name, e.modules[i].FileName)
		require.Equal(t, uint64(km.Base), e.modules[i].Base)
	}
	require.Equal(t, "nt", e.modules[0].Name)
	require.Equal(t, "hal", e.modules[1].Name)
	// Every export of the manifest resolves, with and without the module prefix, case-insensitively.
	for _, name := range g.m.Exports {
		want := uint64(g.m.Symbols[name])
		for _, s := range []string{"nt!" + name, name, "NT!" + strings.ToLower(name)} {
			va, ok := e.lookupSymbol(s)
			require.True(t, ok, s)
			require.Equal(t, want, va, s)
		}
	}
	fn := uint64(g.m.Loop.FunctionVA)
	require.Equal(t, "nt!"+g.m.Loop.Function, e.symbolize(fn))
	require.Equal(t, "nt!"+g.m.Loop.Function+"+0x4", e.symbolize(fn+4))
	require.Equal(t, "nt", e.symbolize(uint64(g.m.KernelBase)))
	require.Empty(t, e.symbolize(0x1000))
	_, ok := e.lookupSymbol("nt!NoSuchExport")
	require.False(t, ok)
}

func TestEvaluate(t *testing.T) {
	g := loadGuest(t)
	c := &kdproto.Context{Rip: 0xfffff80000001234, Rsp: 0xffffa00000010000, R8: 8}
	e := newTestEngine(t, g, c)
	fn := uint64(g.m.Loop.FunctionVA)
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"1000", 0x1000},
		{"0x1000", 0x1000},
		{"fffff800`00001000", 0xfffff80000001000},
		{"@rip", c.Rip},
		{"rip+4", c.Rip + 4},
		{"@rsp-0x10", c.Rsp - 0x10},
		{"@r8", 8},
		{"nt!" + g.m.Loop.Function + "+0x10", fn + 0x10},
		{g.m.Loop.Function, fn},
		{"nt", uint64(g.m.KernelBase)},
		{"0n16", 16},
		{"nt+10-8", uint64(g.m.KernelBase) + 8},
	} {
		v, err := e.evaluate(context.Background(), tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, v, tc.in)
	}
	for _, bad := range []string{"", "nt!Nope", "zzz", "1+", "@xyz"} {
		_, err := e.evaluate(context.Background(), bad)
		require.Error(t, err, bad)
	}
}

// TestStackTrace unwinds through the fixture's NtWriteFile (push rbp; sub rsp, 20h) at each point of its
// prologue and body, from a synthetic stack whose return address points into the loop.
func TestStackTrace(t *testing.T) {
	g := loadGuest(t)
	fn := uint64(g.m.Loop.FunctionVA)
	caller := uint64(g.m.Symbols["KiFixtureLoop"]) + 0x37
	const top uint64 = 0xffffa02c00100000 // unmapped in the guest: served by the overlay only
	for _, tc := range []struct {
		off     uint64 // PC offset into NtWriteFile
		pushed  uint64 // bytes the prologue has pushed/allocated below the return address
		wantRBP bool
	}{
		{0, 0, false},   // at the first instruction: nothing done
		{1, 8, true},    // after push rbp
		{5, 0x28, true}, // after sub rsp, 20h (body)
		{0xc, 0x28, true},
	} {
		t.Run(fmt.Sprint(tc.off), func(t *testing.T) {
			retAt := top - 0x100
			rsp := retAt - tc.pushed
			stack := make([]byte, 0x200)
			put := func(va, v uint64) { binary.LittleEndian.PutUint64(stack[va-(top-0x200):], v) }
			put(retAt, caller)
			put(retAt+8, 0) // the loop's own return slot: ends the walk
			if tc.pushed >= 8 {
				put(retAt-8, 0x1111) // saved rbp
			}
			c := &kdproto.Context{Rip: fn + tc.off, Rsp: rsp, Rbp: 0x2222}
			e := newTestEngine(t, g, c)
			e.mem.(*guestMem).overlays[top-0x200] = stack
			frames, err := e.stackTrace(context.Background(), frameRegs{rip: c.Rip, gpr: [16]uint64{regRSP: rsp, 5: c.Rbp}}, maxFrames)
			require.NoError(t, err)
			require.GreaterOrEqual(t, len(frames), 2)
			require.Equal(t, fn+tc.off, frames[0].IP)
			require.Equal(t, caller, frames[0].RetAddr)
			require.Equal(t, caller, frames[1].IP)
			require.Equal(t, retAt+8, frames[1].ChildSP)
			var out bytes.Buffer
			e.out = &out
			_, err = e.cmdStack(context.Background(), &out)
			require.NoError(t, err)
			require.Contains(t, out.String(), "nt!"+g.m.Loop.Function)
		})
	}
}

func TestDumpFormats(t *testing.T) {
	g := loadGuest(t)
	e := newTestEngine(t, g, &kdproto.Context{})
	base := uint64(g.m.KernelBase)
	var w bytes.Buffer
	_, err := e.cmdDump(context.Background(), &w, 'b', fmt.Sprintf("%#x L20", base), false)
	require.NoError(t, err)
	require.Equal(t, fmtAddr(base)+"  4d 5a", w.String()[:len(fmtAddr(base))+7])
	require.Contains(t, w.String(), "-")
	require.Contains(t, w.String(), "  MZ")
	w.Reset()
	_, err = e.cmdDump(context.Background(), &w, 'q', fmt.Sprintf("%#x L2", base), false)
	require.NoError(t, err)
	first, _ := e.mem.ReadVirtual(context.Background(), base, 16)
	require.Equal(t, fmt.Sprintf("%s  %s %s\n", fmtAddr(base), fmtAddr(binary.LittleEndian.Uint64(first)), fmtAddr(binary.LittleEndian.Uint64(first[8:]))), w.String())
	w.Reset()
	_, err = e.cmdDump(context.Background(), &w, 'd', fmt.Sprintf("%#x L4", base), false)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%s  %08x %08x %08x %08x\n", fmtAddr(base), binary.LittleEndian.Uint32(first), binary.LittleEndian.Uint32(first[4:]),
		binary.LittleEndian.Uint32(first[8:]), binary.LittleEndian.Uint32(first[12:])), w.String())
	_, err = e.cmdDump(context.Background(), &w, 'b', "0x10 L0", false)
	require.Error(t, err)
}

func TestDisassembleMatchesManifest(t *testing.T) {
	g := loadGuest(t)
	e := newTestEngine(t, g, &kdproto.Context{})
	want := g.m.Loop.Disassembly["function"]
	ins, err := e.disassemble(context.Background(), uint64(g.m.Loop.FunctionVA), len(want))
	require.NoError(t, err)
	require.Len(t, ins, len(want))
	for i, w := range want {
		got := strings.Join(strings.Fields(ins[i].Text), " ")
		if strings.Contains(w, "[Ki") { // internal symbol: the debugger shows the address instead
			require.Equal(t, strings.Fields(w)[0], strings.Fields(got)[0], "instruction %d", i)
			continue
		}
		require.Equal(t, w, got, "instruction %d", i)
	}
}

func TestFlagString(t *testing.T) {
	require.Equal(t, "nv up ei pl zr na po nc", flagString(0x246&^0x4))
	require.Equal(t, "ov dn di ng nz ac pe cy", flagString(1<<11|1<<10|1<<7|1<<4|1<<2|1))
}

func TestDR7(t *testing.T) {
	e := &Engine{}
	e.bps = []*breakpoint{{Kind: "ba", Access: "w", Size: 8, Slot: 0}, {Kind: "ba", Access: "e", Size: 1, Slot: 2}, {Kind: "bp"}}
	// slot 0: L0, RW=01, LEN=10 (8 bytes); slot 2: L2, RW=00, LEN=00.
	require.Equal(t, uint64(0x400|1|1<<4|0b1001<<16), e.dr7())
}
