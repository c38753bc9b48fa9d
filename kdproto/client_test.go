package kdproto_test

import (
	"context"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdtest"
)

// scriptedTarget answers a client the way a kernel without GetContextEx would: memory from a flat buffer, a
// fixed CONTEXT, KSPECIAL of the Win10 size, unknown breakpoint handles refused. It records every request.
type scriptedTarget struct {
	base uint64
	mem  []byte
	ctx  kdproto.Context

	// dropFirst makes the target behave as if it had resumed just before the first request: the request is
	// dropped (a running kernel ignores requests) and only a break-in stops it again.
	dropFirst bool

	mu   sync.Mutex
	reqs []*kdproto.Manipulate
}

func (st *scriptedTarget) log() []*kdproto.Manipulate {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]*kdproto.Manipulate(nil), st.reqs...)
}

func (st *scriptedTarget) serve(ctx context.Context, s *kdproto.TargetSession) {
	stop := &kdproto.StateChange{NewState: kdproto.StateChangeException, NumberProcessors: 2, ProgramCounter: st.ctx.Rip,
		U: &kdproto.Exception64{ExceptionCode: kdproto.StatusBreakpoint, NumberParameters: 1, FirstChance: 1}}
	running := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.BreakIns():
			if running {
				running = false
				_ = s.SendStateChange(ctx, stop)
			}
		case req := <-s.Requests():
			st.mu.Lock()
			st.reqs = append(st.reqs, req)
			drop := st.dropFirst
			st.dropFirst = false
			st.mu.Unlock()
			if drop || running {
				running = true
				_ = s.ClearPending(ctx)
				continue
			}
			r := req.Reply(kdproto.StatusSuccess)
			switch u := r.U.(type) {
			case *kdproto.GetVersion64:
				r.U = kdproto.DefaultGetVersion64(19041, st.base, st.base+0x100, st.base+0x200)
			case *kdproto.ReadMemory64:
				switch req.APINumber {
				case kdproto.APIReadVirtualMemory:
					off := u.TargetBaseAddress - st.base
					if u.TargetBaseAddress < st.base || off+uint64(u.TransferCount) > uint64(len(st.mem)) {
						r.ReturnStatus = kdproto.StatusUnsuccessful
						break
					}
					r.Data = append([]byte(nil), st.mem[off:off+uint64(u.TransferCount)]...)
					u.ActualBytesRead = u.TransferCount
				case kdproto.APIReadControlSpace:
					ks := &kdproto.KSpecialRegisters{Cr3: 0x1ab000, KernelDr7: 0x400}
					r.Data, _ = ks.Encode(int(min(u.TransferCount, kdproto.KSpecialSizeWin10)))
					u.ActualBytesRead = uint32(len(r.Data))
				default:
					r.ReturnStatus = kdproto.StatusUnsuccessful
				}
			case *kdproto.ContextEx:
				r.ReturnStatus = kdproto.StatusUnsuccessful
			case *kdproto.GetContext:
				r.Data, _ = st.ctx.MarshalBinary()
			case *kdproto.RestoreBreakpoint:
				r.ReturnStatus = kdproto.StatusUnsuccessful
			case *kdproto.Continue2:
				running = true
				_ = s.ClearPending(ctx)
				continue
			}
			_ = s.Respond(ctx, r)
		}
	}
}

// newScripted builds a KDNET-dialect session pair with st answering.
func newScripted(t *testing.T, st *scriptedTarget) *kdproto.Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, b := kdtest.Pair()
	cfg := kdproto.Config{Dialect: kdproto.DialectKDNET, RetransmitInterval: 50 * time.Millisecond}
	hs, ts := kdproto.NewHost(a, cfg), kdproto.NewTarget(b, cfg)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = hs.Run(ctx) }()
	go func() { defer wg.Done(); _ = ts.Run(ctx) }()
	go func() { defer wg.Done(); st.serve(ctx, ts) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return kdproto.NewClient(hs, nil)
}

// scriptedMemory lays out a list head at base+0x100 with two module entries, and the debugger data list at
// base+0x200 pointing at a KDBG at base+0x300.
func scriptedMemory(base uint64) []byte {
	mem := make([]byte, 0x3000)
	put := func(off int, v uint64) { binary.LittleEndian.PutUint64(mem[off:], v) }
	put(0x100, base+0x400) // PsLoadedModuleList.Flink → entry 1
	put(0x400, base+0x500) // entry 1 → entry 2
	put(0x500, base+0x100) // entry 2 → head
	put(0x200, base+0x300) // KdpDebuggerDataListHead.Flink → KDBG
	binary.LittleEndian.PutUint32(mem[0x310:], 0x4742444B)
	binary.LittleEndian.PutUint32(mem[0x314:], 0x360)
	put(0x318, base) // KernBase
	return mem
}

func TestClientAttachSequence(t *testing.T) {
	const base = 0xfffff80000000000
	st := &scriptedTarget{base: base, mem: scriptedMemory(base), ctx: kdproto.Context{Rip: base + 0x10, ContextFlags: kdproto.ContextAll}}
	c := newScripted(t, st)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, c.Attach(ctx))
	require.Equal(t, uint64(base), c.Version.KernBase)
	require.Equal(t, uint64(base+0x300), c.KDBGAddress)
	require.Len(t, c.KDBG, 0x360)
	require.Equal(t, []uint64{base + 0x400, base + 0x500}, c.ModuleEntries)
	require.Equal(t, 2, c.NumberProcessors())

	var apis []uint32
	var reads [][2]uint64
	for _, r := range st.log() {
		apis = append(apis, r.APINumber)
		if r.APINumber == kdproto.APIReadVirtualMemory {
			u := r.U.(*kdproto.ReadMemory64)
			reads = append(reads, [2]uint64{u.TargetBaseAddress, uint64(u.TransferCount)})
		}
	}
	// GetVersion first; then list head, KDBG header, KDBG body (+0x18, Size-0x18), module list head, entries.
	require.Equal(t, kdproto.APIGetVersion, apis[0])
	require.Equal(t, [][2]uint64{{base + 0x200, 0x10}, {base + 0x300, 0x18}, {base + 0x318, 0x348}, {base + 0x100, 0x10},
		{base + 0x400, 0x88}, {base + 0x500, 0x88}, {kdproto.KUserSharedDataKernel + 0x14, 0x80}}, reads)
	n := 0
	for _, r := range st.log() {
		if r.APINumber == kdproto.APIRestoreBreakPoint {
			n++
			require.Equal(t, uint32(n), r.U.(*kdproto.RestoreBreakpoint).BreakPointHandle)
		}
	}
	require.Equal(t, kdproto.AttachBreakpointProbes, n)
	tail := apis[len(apis)-3:]
	require.Equal(t, []uint32{kdproto.APIGetContextEx, kdproto.APIGetContext, kdproto.APIReadControlSpace}, tail,
		"GetContextEx is tried first and GetContext is the fallback")

	// Once refused, GetContextEx is not asked again.
	before := len(st.log())
	cx, err := c.GetContext(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(base+0x10), cx.Rip)
	require.Equal(t, kdproto.APIGetContext, st.log()[before].APINumber)
}

// TestClientAttachToStoppedTarget: a target left stopped by a previous debugger ignores break-ins; the client
// falls back to RESET, on which the target re-sends its pending stop.
func TestClientAttachToStoppedTarget(t *testing.T) {
	const base = 0xfffff80000000000
	st := &scriptedTarget{base: base, mem: scriptedMemory(base), ctx: kdproto.Context{Rip: base + 0x10}}
	first := newScripted(t, st)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc, err := first.BreakIn(ctx)
	require.NoError(t, err)
	second := kdproto.NewClient(first.Session(), nil)
	require.NoError(t, second.Attach(ctx))
	require.Equal(t, sc.ProgramCounter, second.Stop.ProgramCounter)
	require.Equal(t, uint64(base), second.Version.KernBase)
}

// TestClientReissuesDroppedRequest: a request that a target dropped because it resumed under the client (the
// race of a debugger attaching right after another continued) is recovered by a break-in and a re-issue.
func TestClientReissuesDroppedRequest(t *testing.T) {
	const base = 0xfffff80000000000
	st := &scriptedTarget{base: base, mem: scriptedMemory(base)}
	c := newScripted(t, st)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.BreakIn(ctx)
	require.NoError(t, err)
	st.mu.Lock()
	st.dropFirst = true
	st.mu.Unlock()
	v, err := c.GetVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(base), v.KernBase)
	var n int
	for _, r := range st.log() {
		if r.APINumber == kdproto.APIGetVersion {
			n++
		}
	}
	require.Equal(t, 2, n, "the dropped GetVersion is sent again")
}

func TestClientReadChunks(t *testing.T) {
	const base = 0xfffff80000000000
	mem := make([]byte, 3*kdproto.MaxManipulateData+100)
	for i := range mem {
		mem[i] = byte(i * 7)
	}
	st := &scriptedTarget{base: base, mem: mem}
	c := newScripted(t, st)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.BreakIn(ctx)
	require.NoError(t, err)
	got, err := c.ReadVirtual(ctx, base+50, len(mem)-50)
	require.NoError(t, err)
	require.Equal(t, mem[50:], got)
	var counts []uint32
	for _, r := range st.log() {
		counts = append(counts, r.U.(*kdproto.ReadMemory64).TransferCount)
	}
	require.Equal(t, []uint32{kdproto.MaxManipulateData, kdproto.MaxManipulateData, kdproto.MaxManipulateData, 50}, counts)

	// A read running off the end returns what was read and a status error.
	got, err = c.ReadVirtual(ctx, base+uint64(len(mem))-kdproto.MaxManipulateData-10, kdproto.MaxManipulateData+20)
	require.Error(t, err)
	require.True(t, kdproto.IsStatus(err, kdproto.StatusUnsuccessful), "%v", err)
	require.Len(t, got, kdproto.MaxManipulateData)
}
