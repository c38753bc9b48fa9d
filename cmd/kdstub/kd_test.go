package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdtest"
)

type kdResult struct {
	Command string          `json:"command"`
	Output  string          `json:"output"`
	Error   string          `json:"error"`
	Data    json.RawMessage `json:"data"`
}

func parseKDResults(t *testing.T, out string) []kdResult {
	t.Helper()
	var res []kdResult
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r kdResult
		require.NoError(t, json.Unmarshal([]byte(line), &r), line)
		res = append(res, r)
	}
	return res
}

// result returns the result of the i-th command and requires it to have succeeded.
func result(t *testing.T, res []kdResult, i int, cmd string) kdResult {
	t.Helper()
	require.Greater(t, len(res), i, "no result for %q", cmd)
	require.Equal(t, cmd, res[i].Command)
	require.Empty(t, res[i].Error, "%s failed; output:\n%s", cmd, res[i].Output)
	return res[i]
}

func decode[T any](t *testing.T, r kdResult) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(r.Data, &v), "data of %q: %s", r.Command, r.Data)
	return v
}

// TestKDLive drives the built-in client and debugger against the fixture guest under real QEMU, served by
// `kdstub serve` over loopback KDNET, and checks every answer against the guest's manifest.
func TestKDLive(t *testing.T) {
	ls := startLiveStub(t, 2, viaKDNETTarget)
	m := ls.m

	t.Run("attach sequence matches WinDbg's", func(t *testing.T) {
		reqs := windbgRequests(t)
		var windbg []uint32
		for _, r := range reqs {
			windbg = append(windbg, r.Req.APINumber)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var rec *kdtest.Recorder
		c, done := ls.connect(t, ctx, &rec)
		defer done()
		require.NoError(t, c.Attach(ctx))
		require.NoError(t, c.Continue2(ctx, kdproto.ContinueOptions{}))
		var ours []uint32
		seen := map[uint32]bool{}
		for _, r := range rec.Log() {
			if !r.Sent || !r.P.IsData() || r.P.Type != kdproto.PacketTypeManipulate || seen[r.P.ID] {
				continue
			}
			seen[r.P.ID] = true
			req, err := kdproto.DecodeManipulate(r.P.Data)
			require.NoError(t, err)
			ours = append(ours, req.APINumber)
		}
		// Our stub serves GetContextEx, so no GetContext fallback may appear on our side.
		require.Equal(t, attachSignature(windbg, true), attachSignature(ours, false), "ours: %v", names(ours))
		// What the attach read must be the guest's truth.
		require.Equal(t, uint64(m.KernelBase), c.Version.KernBase)
		require.Equal(t, uint64(m.KDBG.Address), c.KDBGAddress)
		require.Equal(t, []byte(m.KDBG.Plaintext), c.KDBG, "the KDBG served must be the decoded block")
		require.Len(t, c.ModuleEntries, len(m.KernelModules))
	})

	t.Run("stub answers every request type of the capture", func(t *testing.T) {
		replayCaptureRequests(t, ls)
	})

	t.Run("version lm process db u", func(t *testing.T) {
		kdbgVA := uint64(m.KDBG.Address)
		res := ls.kd(t, fmt.Sprintf("version; lm; !process 0 0; db %#x L80; !db %#x L40; u nt!%s L%d; rdmsr c0000080; !pcr",
			kdbgVA, uint64(m.KernelCR3), m.Loop.Function, len(m.Loop.Disassembly["function"])))

		v := decode[struct {
			Build      int
			Processors int
			KernBase   uint64
		}](t, result(t, res, 0, "version"))
		require.Equal(t, m.Build, v.Build)
		require.Equal(t, 2, v.Processors)
		require.Equal(t, uint64(m.KernelBase), v.KernBase)
		require.Contains(t, res[0].Output, fmt.Sprintf("Kernel Version %d MP (2 procs)", m.Build))

		mods := decode[[]struct {
			Start, End uint64
			File       string
		}](t, result(t, res, 1, "lm"))
		require.Len(t, mods, len(m.KernelModules))
		for i, km := range m.KernelModules {
			require.Equal(t, km.Name, mods[i].File)
			require.Equal(t, uint64(km.Base), mods[i].Start)
			require.Equal(t, uint64(km.Base+km.Size), mods[i].End)
			require.Contains(t, res[1].Output, fmtKD(uint64(km.Base))+" "+fmtKD(uint64(km.Base+km.Size)))
		}

		procs := decode[[]struct {
			EPROCESS uint64 `json:"eprocess"`
			PID      uint64 `json:"pid"`
			PPID     uint64 `json:"ppid"`
			Name     string `json:"name"`
			DTB      uint64 `json:"dtb"`
		}](t, result(t, res, 2, "!process 0 0"))
		require.Len(t, procs, len(m.Processes))
		for i, p := range m.Processes {
			require.Equal(t, uint64(p.EPROCESS), procs[i].EPROCESS)
			require.Equal(t, p.PID, procs[i].PID)
			require.Equal(t, p.PPID, procs[i].PPID)
			require.Equal(t, p.Name, procs[i].Name)
			require.Equal(t, uint64(p.DTB), procs[i].DTB)
			require.Contains(t, res[2].Output, fmt.Sprintf("PROCESS %016x", uint64(p.EPROCESS)))
		}

		db := decode[map[string]any](t, result(t, res, 3, fmt.Sprintf("db %#x L80", kdbgVA)))
		require.Equal(t, fmt.Sprintf("%x", []byte(m.KDBG.Plaintext)[:0x80]), db["bytes"], "db must show the decoded KDBG")
		require.Contains(t, res[3].Output, fmtKD(kdbgVA)+"  ")

		ram, err := os.ReadFile(filepath.Join(ls.dir, winguest.RAMFile))
		require.NoError(t, err)
		pdb := decode[map[string]any](t, result(t, res, 4, fmt.Sprintf("!db %#x L40", uint64(m.KernelCR3))))
		require.Equal(t, fmt.Sprintf("%x", ram[m.KernelCR3:m.KernelCR3+0x40]), pdb["bytes"], "!db reads guest-physical memory")

		u := decode[[]struct {
			Addr uint64 `json:"addr"`
			Text string `json:"text"`
		}](t, result(t, res, 5, fmt.Sprintf("u nt!%s L%d", m.Loop.Function, len(m.Loop.Disassembly["function"]))))
		require.Equal(t, uint64(m.Loop.FunctionVA), u[0].Addr)
		requireSameDisassembly(t, m.Loop.Disassembly["function"], u)
		require.Contains(t, res[5].Output, "nt!"+m.Loop.Function+":")

		msr := decode[map[string]uint64](t, result(t, res, 6, "rdmsr c0000080"))
		require.NotZero(t, msr["value"]&(1<<8), "EFER.LME must be set in a running x64 kernel")

		pcr := decode[map[string]uint64](t, result(t, res, 7, "!pcr"))
		cpu := m.CPUs[pcr["processor"]]
		require.Equal(t, uint64(cpu.KPCR), pcr["kpcr"])
		require.Equal(t, uint64(cpu.KPRCB), pcr["kprcb"])
		require.Equal(t, uint64(cpu.IdleThread), pcr["idleThread"])
	})

	t.Run("bp g r k t p", func(t *testing.T) {
		fn := uint64(m.Loop.FunctionVA)
		loop, next := uint64(m.Symbols["KiFixtureLoop"]), fn
		res := ls.kd(t, "bp nt!"+m.Loop.Function+"; g; r; k; t; p; bc *")
		result(t, res, 0, "bp nt!"+m.Loop.Function)
		stop := decode[stopData](t, result(t, res, 1, "g"))
		require.Equal(t, 0, stop.Breakpoint)
		require.Equal(t, fn, stop.PC)
		require.Equal(t, "nt!"+m.Loop.Function, stop.Symbol)
		require.Contains(t, res[1].Output, "Breakpoint 0 hit")

		regs := decode[map[string]uint64](t, result(t, res, 2, "r"))
		require.Equal(t, fn, regs["rip"])
		require.Regexp(t, regexp.MustCompile(`(?m)^rip=`+fmt.Sprintf("%016x", fn)+` rsp=`), res[2].Output)

		frames := decode[[]struct {
			IP      uint64 `json:"ip"`
			RetAddr uint64 `json:"retAddr"`
			ChildSP uint64 `json:"childSP"`
		}](t, result(t, res, 3, "k"))
		require.GreaterOrEqual(t, len(frames), 2)
		require.Equal(t, fn, frames[0].IP)
		require.Equal(t, regs["rsp"], frames[0].ChildSP)
		require.Equal(t, frames[0].RetAddr, frames[1].IP)
		require.True(t, frames[1].IP > loop && frames[1].IP < next, "caller %#x must be inside KiFixtureLoop [%#x, %#x)", frames[1].IP, loop, next)

		// p over the loop's `call NtWriteFile` (5 bytes before the return address k found) runs the call. The
		// breakpoint is cleared first: with two CPUs looping, the other one could hit it meanwhile.
		ret := frames[0].RetAddr
		res2 := ls.kd(t, fmt.Sprintf("bp %#x; g; bc *; p", ret-5))
		atCall := decode[stopData](t, result(t, res2, 1, "g"))
		require.Equal(t, ret-5, atCall.PC)
		overCall := decode[stopData](t, result(t, res2, 3, "p"))
		require.Equal(t, ret, overCall.PC, "p must stop at the return address, not inside the callee")

		step := decode[stopData](t, result(t, res, 4, "t"))
		require.Equal(t, fn+1, step.PC, "t executes push rbp (1 byte)")
		over := decode[stopData](t, result(t, res, 5, "p"))
		require.Equal(t, fn+5, over.PC, "p executes sub rsp, 20h (4 bytes)")
	})

	t.Run(".process reads user memory of another process", func(t *testing.T) {
		var p winguest.Process
		for _, q := range m.Processes {
			if q.PEB != 0 && len(q.Modules) > 0 {
				p = q
				break
			}
		}
		require.NotZero(t, p.PEB, "the fixture has user processes")
		res := ls.kd(t, fmt.Sprintf(".process %#x; dq %#x L1; .process", uint64(p.EPROCESS), uint64(p.PEB)+0x10))
		result(t, res, 0, fmt.Sprintf(".process %#x", uint64(p.EPROCESS)))
		dq := decode[map[string]any](t, result(t, res, 1, fmt.Sprintf("dq %#x L1", uint64(p.PEB)+0x10)))
		var want [8]byte
		binary.LittleEndian.PutUint64(want[:], uint64(p.Modules[0].Base))
		require.Equal(t, fmt.Sprintf("%x", want[:]), dq["bytes"], "PEB.ImageBaseAddress of %s", p.Name)
		result(t, res, 2, ".process")
	})

	t.Run("processor switch", func(t *testing.T) {
		res := ls.kd(t, "~1; r rip; !pcr")
		sw := decode[stopData](t, result(t, res, 0, "~1"))
		require.Equal(t, 1, sw.Processor)
		pcr := decode[map[string]uint64](t, result(t, res, 2, "!pcr"))
		require.EqualValues(t, 1, pcr["processor"])
		require.Equal(t, uint64(m.CPUs[1].KPCR), pcr["kpcr"])
	})

	t.Run("ba w 8 on the counter", func(t *testing.T) {
		counter := uint64(m.Loop.Counter)
		res := ls.kd(t, fmt.Sprintf("ba w 8 %#x; g; dq %#x L1; bc *", counter, counter))
		stop := decode[stopData](t, result(t, res, 1, "g"))
		require.Equal(t, 0, stop.Breakpoint, "output:\n%s", res[1].Output)
		pc := stop.PC
		require.True(t, pc > uint64(m.Symbols["KiFixtureLoop"]) && pc < uint64(m.Loop.FunctionVA), "data breakpoints trap after the writing instruction, in the loop (pc %#x)", pc)
		before := decode[map[string]any](t, result(t, res, 2, fmt.Sprintf("dq %#x L1", counter)))
		require.NotEqual(t, strings.Repeat("0", 16), before["bytes"])
	})
}

// TestKDTransports attaches `kdstub kd` over the two other ways a debugger reaches the stub: classic KDNET
// (the debugger listens and answers the target's pokes) and KD serial over TCP.
func TestKDTransports(t *testing.T) {
	for _, via := range []string{viaKDNETClassic, viaSerialTCP} {
		t.Run(via, func(t *testing.T) {
			ls := startLiveStub(t, 1, via)
			res := ls.kd(t, "version; r rip; bp nt!"+ls.m.Loop.Function+"; g; bc *")
			v := decode[struct{ Build, Processors int }](t, result(t, res, 0, "version"))
			require.Equal(t, ls.m.Build, v.Build)
			require.Equal(t, 1, v.Processors)
			rip := decode[map[string]uint64](t, result(t, res, 1, "r rip"))["rip"]
			require.True(t, rip >= uint64(ls.m.KernelBase) && rip < uint64(ls.m.KernelBase+ls.m.KernelSize), "rip %#x", rip)
			stop := decode[stopData](t, result(t, res, 3, "g"))
			require.Equal(t, 0, stop.Breakpoint)
			require.Equal(t, uint64(ls.m.Loop.FunctionVA), stop.PC)
		})
	}
}

// requireSameDisassembly compares x86asm Intel output with the manifest's. The manifest names internal kernel
// symbols (from the generator) where the debugger, which has only export tables, prints an address; those
// bracketed operands are compared by shape only. Everything else must match exactly (whitespace-normalised).
func requireSameDisassembly(t *testing.T, want []string, got []struct {
	Addr uint64 `json:"addr"`
	Text string `json:"text"`
}) {
	t.Helper()
	require.Len(t, got, len(want))
	sym := regexp.MustCompile(`\[[^\]]*\]`)
	for i, w := range want {
		g := strings.Join(strings.Fields(got[i].Text), " ")
		if sym.MatchString(w) && !strings.ContainsAny(sym.FindString(w), "+-*") {
			require.Equal(t, sym.ReplaceAllString(w, "[]"), sym.ReplaceAllString(g, "[]"), "instruction %d", i)
			continue
		}
		require.Equal(t, w, g, "instruction %d", i)
	}
}

// stopData is the JSON data of g/t/p/~N (debugger.StopInfo).
type stopData struct {
	Processor  int
	PC         uint64
	Symbol     string
	Breakpoint int
}

func fmtKD(v uint64) string { return fmt.Sprintf("%08x`%08x", v>>32, uint32(v)) }

func names(apis []uint32) []string {
	var out []string
	for _, a := range apis {
		out = append(out, kdproto.APIName(a))
	}
	return out
}

// replayCaptureRequests sends one request of every manipulate type the WinDbg capture contains to the live stub
// and checks each gets a timely, well-formed answer. Requests that would corrupt the guest carry the guest's own
// state instead of the boot debugger's (SetContext gets the current CONTEXT, WriteControlSpace the current
// KSPECIAL_REGISTERS); the continue APIs are replayed last, each followed by a break-in.
func replayCaptureRequests(t *testing.T, ls *liveStub) {
	reqs := windbgRequests(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, done := ls.connect(t, ctx, nil)
	defer done()
	require.NoError(t, c.Attach(ctx))
	cur, err := c.GetContext(ctx, c.Processor())
	require.NoError(t, err)
	curBytes, err := cur.MarshalBinary()
	require.NoError(t, err)

	byAPI := map[uint32]capturedRequest{}
	var order []uint32
	for _, r := range reqs {
		if _, ok := byAPI[r.Req.APINumber]; !ok {
			byAPI[r.Req.APINumber] = r
			order = append(order, r.Req.APINumber)
		}
	}
	require.GreaterOrEqual(t, len(order), 8, "capture request types: %v", names(order))
	var continues []uint32
	for _, api := range order {
		r := byAPI[api]
		req := *r.Req
		if kdproto.NoReply(api) {
			continues = append(continues, api)
			continue
		}
		switch api {
		case kdproto.APISetContext:
			req.Processor, req.Data = c.Processor(), curBytes
		case kdproto.APIWriteControlSpace:
			req.Processor = c.Processor()
			u := *req.U.(*kdproto.WriteMemory64)
			ks, err := c.ReadControlSpace(ctx, c.Processor(), kdproto.ControlSpaceKSpecial, int(u.TransferCount))
			require.NoError(t, err)
			req.U, req.Data = &u, ks
		}
		rctx, rcancel := context.WithTimeout(ctx, 15*time.Second)
		resp, err := c.Session().Request(rctx, &req)
		rcancel()
		require.NoError(t, err, "%s (frame %d): no response", kdproto.APIName(api), r.Frame)
		require.Equal(t, api, resp.APINumber)
		checkWellFormed(t, &req, resp)
	}
	require.NotEmpty(t, continues, "the capture resumes the target")
	for _, api := range continues {
		r := byAPI[api]
		req := *r.Req
		req.Processor = c.Processor()
		_, err := c.Session().Request(ctx, &req)
		require.NoError(t, err, "%s (frame %d)", kdproto.APIName(api), r.Frame)
		bctx, bcancel := context.WithTimeout(ctx, 20*time.Second)
		sc, err := c.BreakIn(bctx)
		bcancel()
		require.NoError(t, err, "no stop after %s + break-in", kdproto.APIName(api))
		require.Equal(t, kdproto.StateChangeException, sc.NewState)
	}
	require.NoError(t, c.Continue2(ctx, kdproto.ContinueOptions{}))
}

// checkWellFormed checks a response against its request: the union type of the API, a data length consistent
// with the counts it reports, and on success the payload the API promises.
func checkWellFormed(t *testing.T, req, resp *kdproto.Manipulate) {
	t.Helper()
	name := kdproto.APIName(req.APINumber)
	want, err := kdproto.UnionFor(req.APINumber)
	require.NoError(t, err)
	require.IsType(t, want, resp.U, name)
	require.LessOrEqual(t, len(resp.Data), kdproto.MaxManipulateData, name)
	switch u := resp.U.(type) {
	case *kdproto.ReadMemory64:
		asked := req.U.(*kdproto.ReadMemory64).TransferCount
		require.Equal(t, int(u.ActualBytesRead), len(resp.Data), "%s: ActualBytesRead vs data", name)
		require.LessOrEqual(t, u.ActualBytesRead, asked, name)
		if resp.ReturnStatus == kdproto.StatusSuccess {
			require.Equal(t, asked, u.ActualBytesRead, "%s: success must return everything", name)
		}
	case *kdproto.GetContext:
		if resp.ReturnStatus == kdproto.StatusSuccess {
			require.Len(t, resp.Data, kdproto.ContextSize, name)
			c, err := kdproto.DecodeContext(resp.Data)
			require.NoError(t, err)
			require.NotZero(t, c.Rip, name)
		}
	case *kdproto.ContextEx:
		if resp.ReturnStatus == kdproto.StatusSuccess {
			require.Equal(t, int(u.BytesCopied), len(resp.Data), name)
		} else {
			require.Zero(t, u.BytesCopied, name)
		}
	case *kdproto.GetVersion64:
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus, name)
		require.Equal(t, kdproto.MachineAMD64, u.MachineType)
	case *kdproto.SetContext, *kdproto.WriteMemory64:
		require.Equal(t, kdproto.StatusSuccess, resp.ReturnStatus, "%s with the guest's own state must succeed", name)
	case *kdproto.RestoreBreakpoint:
		require.Contains(t, []uint32{kdproto.StatusSuccess, kdproto.StatusUnsuccessful}, resp.ReturnStatus, name)
	}
}

// TestDemo runs `kdstub demo`, the README's first command, to completion and checks it showed the hit and tidied up.
func TestDemo(t *testing.T) {
	requireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out syncBuffer
	start := time.Now()
	require.NoError(t, runCLI(ctx, &out, "demo"), out.String())
	t.Logf("demo took %s", time.Since(start))
	s := out.String()
	for _, want := range []string{"Windows 10 Kernel Version", "module name", "**** NT ACTIVE PROCESS DUMP ****",
		"Image: System", "Breakpoint 0 hit", "nt!NtWriteFile:", "Child-SP", "Call Site", "push    rbp",
		"nt!NtWriteFile+0x1:", "== detached"} {
		require.Contains(t, s, want)
	}
	dir := regexp.MustCompile(`generating the fixture guest in (\S+)`).FindStringSubmatch(s)
	require.Len(t, dir, 2)
	_, err := os.Stat(filepath.Dir(dir[1]))
	require.True(t, os.IsNotExist(err), "demo left %s behind", filepath.Dir(dir[1]))
	ram := regexp.MustCompile(`guest RAM in (\S+)\)`).FindStringSubmatch(s)
	require.Len(t, ram, 2)
	_, err = os.Stat(ram[1])
	require.True(t, os.IsNotExist(err), "demo left %s behind", ram[1])
}
