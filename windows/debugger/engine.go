// Package debugger is the host-side debugger engine behind `kdstub kd`: a small WinDbg-like command interpreter
// over a KD connection (kdproto.Client). It knows Windows (module lists, export tables, EPROCESS, x64 unwind
// data, KPCR) but never the wire: every guest byte comes through the client's typed requests.
package debugger

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/windows/kdbg"
	"github.com/kdstub/kdstub/windows/objects"
	"github.com/kdstub/kdstub/windows/paging"
)

// vmem is the memory view the Windows walkers read through.
type vmem interface {
	ReadVirtual(ctx context.Context, va uint64, buf []byte) error
}

// kdMemory is the guest-virtual memory the engine reads: the KD client, or a fake in tests and fuzzing.
type kdMemory interface {
	ReadVirtual(ctx context.Context, va uint64, n int) ([]byte, error)
}

// ErrQuit is returned by Execute for `q`: the caller detaches and ends the session.
var ErrQuit = errors.New("quit")

// Options configure an Engine.
type Options struct {
	JSON   bool // one JSON object per command instead of text
	Logger *slog.Logger
}

// Engine interprets debugger commands against one attached target.
type Engine struct {
	c    *kdproto.Client
	mem  kdMemory
	out  io.Writer
	opts Options
	log  *slog.Logger

	modules  []*Module
	ctxCache map[uint16]*kdproto.Context
	bps      []*breakpoint

	interactive bool // commands typed at a prompt: not echoed back

	offsets *objects.Offsets // EPROCESS layout, detected on first use
	process uint64           // implicit process set by .process (0 = current)
	procAS  *paging.AddressSpace
}

// Result is what one command produced; in JSON mode it is printed as one object.
type Result struct {
	Command string `json:"command"`
	Output  string `json:"output"`
	Error   string `json:"error,omitempty"`
	Data    any    `json:"data,omitempty"`
}

// New builds an engine over an attached client and loads the module list and export symbols.
func New(ctx context.Context, c *kdproto.Client, out io.Writer, opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{c: c, mem: c, out: out, opts: opts, log: opts.Logger, ctxCache: map[uint16]*kdproto.Context{}}
	if err := e.reloadModules(ctx); err != nil {
		e.log.Warn("module list unavailable", "err", err)
	}
	return e, nil
}

func (e *Engine) reloadModules(ctx context.Context) error {
	if e.c.Version == nil || e.c.Version.PsLoadedModuleList == 0 {
		return errors.New("no PsLoadedModuleList")
	}
	mods, err := loadModules(ctx, kernelMem{e}, e.c.Version.PsLoadedModuleList)
	if err != nil {
		return err
	}
	e.modules = mods
	return nil
}

// Modules returns the loaded kernel modules (list order).
func (e *Engine) Modules() []*Module { return e.modules }

// Prompt is WinDbg's "N: kd> ".
func (e *Engine) Prompt() string { return fmt.Sprintf("%d: kd> ", e.c.Processor()) }

// kernelMem reads kernel (and current-process) virtual memory through KD.
type kernelMem struct{ e *Engine }

func (k kernelMem) ReadVirtual(ctx context.Context, va uint64, buf []byte) error {
	b, err := k.e.mem.ReadVirtual(ctx, va, len(buf))
	copy(buf, b)
	return err
}

// physMem reads guest-physical memory through KD (for the .process page walk).
type physMem struct{ c *kdproto.Client }

func (p physMem) ReadPhysical(ctx context.Context, pa uint64, buf []byte) error {
	b, err := p.c.ReadPhysical(ctx, pa, len(buf))
	copy(buf, b)
	return err
}

// readVirtual reads n bytes at va: user addresses go through the implicit process set by .process, everything
// else through the target's own translation.
func (e *Engine) readVirtual(ctx context.Context, va uint64, n int) ([]byte, error) {
	if e.procAS != nil && va < 0x0000_8000_0000_0000 {
		buf := make([]byte, n)
		if err := e.procAS.ReadVirtual(ctx, va, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	return e.mem.ReadVirtual(ctx, va, n)
}

// Execute runs one input line: commands separated by ';'. It returns ErrQuit after `q`.
func (e *Engine) Execute(ctx context.Context, line string) error {
	for _, cmd := range splitCommands(line) {
		if err := e.run(ctx, cmd); err != nil {
			return err
		}
	}
	return nil
}

// Run reads commands from r until EOF, `q` or ctx ends, printing a prompt before each when interactive. Lines
// are read on their own goroutine so that an interrupt does not wait for the next line.
func (e *Engine) Run(ctx context.Context, r io.Reader, prompt bool) error {
	e.interactive = prompt
	defer func() { e.interactive = false }()
	lines := make(chan string)
	errc := make(chan error, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-rctx.Done():
				return
			}
		}
		errc <- sc.Err()
	}()
	for {
		if prompt && !e.opts.JSON {
			fmt.Fprint(e.out, e.Prompt())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case line := <-lines:
			if err := e.Execute(ctx, line); err != nil {
				return err
			}
		}
	}
}

func splitCommands(line string) []string {
	var out []string
	for _, p := range strings.Split(line, ";") {
		if p = strings.TrimSpace(p); p != "" && !strings.HasPrefix(p, "$$") {
			out = append(out, p)
		}
	}
	return out
}

// run executes one command and prints its result (text, or one JSON object).
func (e *Engine) run(ctx context.Context, cmd string) error {
	var buf bytes.Buffer
	prompt := e.Prompt()
	data, err := e.dispatch(ctx, cmd, &buf)
	quit := errors.Is(err, ErrQuit)
	res := Result{Command: cmd, Output: buf.String(), Data: data}
	if err != nil && !quit {
		res.Error = err.Error()
	}
	if e.opts.JSON {
		b, jerr := json.Marshal(res)
		if jerr != nil {
			return fmt.Errorf("encode result of %q: %w", cmd, jerr)
		}
		fmt.Fprintf(e.out, "%s\n", b)
	} else {
		if !e.interactive {
			fmt.Fprintf(e.out, "%s%s\n", prompt, cmd)
		}
		if _, werr := io.Copy(e.out, &buf); werr != nil {
			return fmt.Errorf("write output: %w", werr)
		}
		if res.Error != "" {
			fmt.Fprintf(e.out, "%s\n", res.Error)
		}
	}
	if quit {
		return ErrQuit
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// dispatch runs cmd, writing its text to w, and returns structured data for JSON mode.
func (e *Engine) dispatch(ctx context.Context, cmd string, w io.Writer) (any, error) {
	name, args, _ := strings.Cut(cmd, " ")
	args = strings.TrimSpace(args)
	lname := strings.ToLower(name)
	switch {
	case lname == "version" || lname == "vertarget":
		return e.cmdVersion(ctx, w)
	case lname == "r":
		return e.cmdRegisters(ctx, w, args)
	case lname == "db" || lname == "dd" || lname == "dq" || lname == "dp" || lname == "dw":
		return e.cmdDump(ctx, w, lname[1], args, false)
	case lname == "!db" || lname == "!dd" || lname == "!dq" || lname == "!dw":
		return e.cmdDump(ctx, w, lname[2], args, true)
	case lname == "u":
		return e.cmdUnassemble(ctx, w, args)
	case lname == "lm":
		return e.cmdModules(w)
	case lname == "!process":
		return e.cmdProcess(ctx, w, args)
	case lname == ".process":
		return e.cmdSetProcess(ctx, w, args)
	case strings.HasPrefix(lname, "~") && len(lname) > 1 && lname[len(lname)-1] != 's':
		return e.cmdSwitchCPU(ctx, w, strings.TrimSuffix(lname[1:], "s"))
	case strings.HasPrefix(lname, "~") && strings.HasSuffix(lname, "s"):
		return e.cmdSwitchCPU(ctx, w, lname[1:len(lname)-1])
	case lname == "bp":
		return e.cmdBreakpoint(ctx, w, args)
	case lname == "ba":
		return e.cmdHardwareBreakpoint(ctx, w, args)
	case lname == "bl":
		return e.cmdListBreakpoints(w)
	case lname == "bc":
		return e.cmdClearBreakpoints(w, args)
	case lname == "g":
		return e.cmdGo(ctx, w)
	case lname == "t":
		return e.cmdStep(ctx, w, false)
	case lname == "p":
		return e.cmdStep(ctx, w, true)
	case lname == "k" || lname == "kb" || lname == "kn":
		return e.cmdStack(ctx, w)
	case lname == "rdmsr":
		return e.cmdRdmsr(ctx, w, args)
	case lname == "!pcr":
		return e.cmdPCR(ctx, w, args)
	case lname == "q" || lname == "qd":
		return nil, ErrQuit
	}
	return nil, fmt.Errorf("Unknown command: %s", name)
}

// context returns the (cached) CONTEXT of the current CPU.
func (e *Engine) context(ctx context.Context) (*kdproto.Context, error) {
	cpu := e.c.Processor()
	if c, ok := e.ctxCache[cpu]; ok {
		return c, nil
	}
	c, err := e.c.GetContext(ctx, cpu)
	if err != nil {
		return nil, err
	}
	e.ctxCache[cpu] = c
	return c, nil
}

// invalidate forgets everything that changes when the target runs.
func (e *Engine) invalidate() {
	clear(e.ctxCache)
}

// kdbgBlock returns the KDBG the client read at attach.
func (e *Engine) kdbgBlock() kdbg.Block { return kdbg.Block(e.c.KDBG) }
