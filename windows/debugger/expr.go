package debugger

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/kdstub/kdstub/kdproto"
)

// evaluate parses a WinDbg-style address expression: terms joined by + and -, each a hex number (0x prefix and
// ` separators allowed), a register (@rip, or a bare register name), or a symbol (nt!NtWriteFile, NtWriteFile,
// or a module name for its base).
func (e *Engine) evaluate(ctx context.Context, s string) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("missing address")
	}
	var total uint64
	sign := uint64(1)
	start := 0
	apply := func(tok string) error {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			return fmt.Errorf("syntax error in %q", s)
		}
		v, err := e.term(ctx, tok)
		if err != nil {
			return err
		}
		total += sign * v
		return nil
	}
	for i := 0; i < len(s); i++ {
		if (s[i] == '+' || s[i] == '-') && i > start {
			if err := apply(s[start:i]); err != nil {
				return 0, err
			}
			sign = 1
			if s[i] == '-' {
				sign = ^uint64(0) // two's complement: adding -v
			}
			start = i + 1
		}
	}
	if err := apply(s[start:]); err != nil {
		return 0, err
	}
	return total, nil
}

func (e *Engine) term(ctx context.Context, tok string) (uint64, error) {
	if strings.HasPrefix(tok, "@") {
		return e.register(ctx, tok[1:])
	}
	if !strings.Contains(tok, "!") {
		h := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(tok), "0x"), "`", "")
		if v, err := strconv.ParseUint(h, 16, 64); err == nil {
			return v, nil
		}
		if strings.HasPrefix(strings.ToLower(tok), "0n") {
			if v, err := strconv.ParseUint(tok[2:], 10, 64); err == nil {
				return v, nil
			}
		}
		if v, err := e.register(ctx, tok); err == nil {
			return v, nil
		}
	}
	if v, ok := e.lookupSymbol(tok); ok {
		return v, nil
	}
	return 0, fmt.Errorf("Couldn't resolve error at '%s'", tok)
}

// register reads a named register of the current CPU.
func (e *Engine) register(ctx context.Context, name string) (uint64, error) {
	name = strings.ToLower(name)
	if _, ok := regIndex[name]; !ok {
		return 0, fmt.Errorf("bad register %q", name)
	}
	c, err := e.context(ctx)
	if err != nil {
		return 0, err
	}
	return regValue(c, name), nil
}

// regNames lists the 64-bit registers in WinDbg's `r` order.
var regNames = []string{"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rip", "rsp", "rbp",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

var regIndex = map[string]bool{"rax": true, "rbx": true, "rcx": true, "rdx": true, "rsi": true, "rdi": true,
	"rip": true, "rsp": true, "rbp": true, "r8": true, "r9": true, "r10": true, "r11": true, "r12": true,
	"r13": true, "r14": true, "r15": true, "efl": true, "cs": true, "ss": true, "ds": true, "es": true, "fs": true,
	"gs": true, "dr0": true, "dr1": true, "dr2": true, "dr3": true, "dr6": true, "dr7": true, "eip": true,
	"eax": true, "ecx": true, "edx": true, "ebx": true, "esp": true, "ebp": true, "esi": true, "edi": true}

func regValue(c *kdproto.Context, name string) uint64 {
	switch name {
	case "rax":
		return c.Rax
	case "rbx":
		return c.Rbx
	case "rcx":
		return c.Rcx
	case "rdx":
		return c.Rdx
	case "rsi":
		return c.Rsi
	case "rdi":
		return c.Rdi
	case "rip":
		return c.Rip
	case "rsp":
		return c.Rsp
	case "rbp":
		return c.Rbp
	case "r8":
		return c.R8
	case "r9":
		return c.R9
	case "r10":
		return c.R10
	case "r11":
		return c.R11
	case "r12":
		return c.R12
	case "r13":
		return c.R13
	case "r14":
		return c.R14
	case "r15":
		return c.R15
	case "efl":
		return uint64(c.EFlags)
	case "cs":
		return uint64(c.SegCs)
	case "ss":
		return uint64(c.SegSs)
	case "ds":
		return uint64(c.SegDs)
	case "es":
		return uint64(c.SegEs)
	case "fs":
		return uint64(c.SegFs)
	case "gs":
		return uint64(c.SegGs)
	case "dr0":
		return c.Dr0
	case "dr1":
		return c.Dr1
	case "dr2":
		return c.Dr2
	case "dr3":
		return c.Dr3
	case "dr6":
		return c.Dr6
	case "dr7":
		return c.Dr7
	}
	if strings.HasPrefix(name, "e") {
		return regValue(c, "r"+name[1:]) & 0xFFFFFFFF
	}
	return 0
}

// parseRange parses "ADDR [L count]" (count in hex, as WinDbg) with a default count.
func (e *Engine) parseRange(ctx context.Context, args string, def uint64) (uint64, uint64, error) {
	addrPart, count := args, def
	// Find " L" / " l" on the bytes themselves: case-folding could change the string's length.
	i := strings.Index(args, " l")
	if j := strings.Index(args, " L"); j >= 0 && (i < 0 || j < i) {
		i = j
	}
	if i >= 0 {
		addrPart = args[:i]
		cs := strings.TrimSpace(args[i+2:])
		cs = strings.TrimPrefix(cs, "?")
		v, err := e.evaluate(ctx, cs)
		if err != nil {
			return 0, 0, fmt.Errorf("bad length %q: %w", cs, err)
		}
		count = v
	}
	if count == 0 || count > 0x10000 {
		return 0, 0, fmt.Errorf("length %#x out of range (1..0x10000)", count)
	}
	a, err := e.evaluate(ctx, addrPart)
	return a, count, err
}
