package debugger

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/kdstub/kdstub/kdproto"
)

// FuzzUnwind feeds hostile UNWIND_INFO bytes (in place of NtWriteFile's), stack contents and PCs to the
// unwinder: it must return, with at most maxFrames frames, and never panic.
func FuzzUnwind(f *testing.F) {
	g := loadGuest(f)
	e0 := newTestEngine(f, g, &kdproto.Context{})
	fn := uint64(g.m.Loop.FunctionVA)
	nt := e0.moduleAt(fn)
	if nt == nil || nt.pdata == nil || nt.pdata.load(context.Background()) != nil {
		f.Fatal("no .pdata for the kernel")
	}
	rf, ok := nt.pdata.lookup(uint32(fn - nt.Base))
	if !ok {
		f.Fatal("NtWriteFile has no RUNTIME_FUNCTION")
	}
	unwindVA := nt.Base + uint64(rf[2])
	real, err := e0.mem.ReadVirtual(context.Background(), unwindVA, 8)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(real, make([]byte, 64), uint16(0))
	f.Add(real, make([]byte, 64), uint16(5))
	f.Add([]byte{0x21, 0, 1, 0, 0, 0x01, 0xff, 0xff}, []byte{1, 2, 3}, uint16(1)) // chained, ALLOC_LARGE
	f.Fuzz(func(t *testing.T, unwind, stack []byte, off uint16) {
		if len(unwind) > 4096 || len(stack) > 4096 {
			return
		}
		const sp uint64 = 0xffffa02c00100000
		stack = append([]byte(nil), stack...) // inputs are not ours to modify
		e := newTestEngine(t, g, &kdproto.Context{})
		e.modules = e0.modules
		mem := e.mem.(*guestMem)
		mem.overlays[unwindVA] = unwind
		mem.overlays[sp] = stack
		// Loop the stack back on itself so a walk can only end by the bounds.
		if len(stack) >= 16 {
			binary.LittleEndian.PutUint64(stack[8:], fn+uint64(off))
		}
		frames, _ := e.stackTrace(context.Background(), frameRegs{rip: fn + uint64(off%0x20), gpr: [16]uint64{regRSP: sp}}, maxFrames)
		if len(frames) > maxFrames {
			t.Fatalf("%d frames", len(frames))
		}
	})
}

// FuzzEvaluate: any expression either evaluates or fails with an error.
func FuzzEvaluate(f *testing.F) {
	g := loadGuest(f)
	e := newTestEngine(f, g, &kdproto.Context{Rip: 0x1234})
	for _, s := range []string{"nt!NtWriteFile+0x10", "@rip-8", "fffff800`00001000", "0n10+nt", "+-", "!", "nt!", "@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 256 {
			return
		}
		_, _ = e.evaluate(context.Background(), s)
		_, _, _ = e.parseRange(context.Background(), s, 8)
	})
}
