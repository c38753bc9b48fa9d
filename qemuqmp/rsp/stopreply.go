package rsp

import (
	"bytes"
	"fmt"
	"strconv"
)

// ThreadID is a gdb thread id in multiprocess form (pPID.TID). QEMU numbers vCPUs as threads 1..N of process 1.
type ThreadID struct {
	PID, TID int // -1 means "all"; 0 means "any"
}

func (t ThreadID) String() string {
	f := func(v int) string {
		if v < 0 {
			return "-1"
		}
		return strconv.FormatInt(int64(v), 16)
	}
	return "p" + f(t.PID) + "." + f(t.TID)
}

// ParseThreadID parses "p01.02", "p1.-1", "02" or "-1".
func ParseThreadID(s string) (ThreadID, error) {
	parse := func(v string) (int, error) {
		if v == "-1" {
			return -1, nil
		}
		if v == "" || len(v) > 8 {
			return 0, fmt.Errorf("thread id %q: %w", s, ErrMalformed)
		}
		n, err := strconv.ParseUint(v, 16, 32)
		if err != nil {
			return 0, fmt.Errorf("thread id %q: %w", s, ErrMalformed)
		}
		return int(n), nil
	}
	if len(s) > 0 && s[0] == 'p' {
		pid, tid, ok := bytes.Cut([]byte(s[1:]), []byte{'.'})
		p, err := parse(string(pid))
		if err != nil {
			return ThreadID{}, err
		}
		if !ok {
			return ThreadID{PID: p, TID: -1}, nil
		}
		t, err := parse(string(tid))
		if err != nil {
			return ThreadID{}, err
		}
		return ThreadID{PID: p, TID: t}, nil
	}
	t, err := parse(s)
	if err != nil {
		return ThreadID{}, err
	}
	return ThreadID{PID: 1, TID: t}, nil
}

// WatchKind says which access a watchpoint stop reported.
type WatchKind int

// Watch kinds in stop replies.
const (
	NoWatch     WatchKind = iota
	WatchWrite            // "watch:"
	WatchRead             // "rwatch:"
	WatchAccess           // "awatch:"
)

// StopReply is a decoded stop packet: T/S (stopped with a signal) or W/X (the target exited).
type StopReply struct {
	Kind      byte // 'T', 'S', 'W' or 'X'
	Signal    byte // signal for T/S/X, exit status for W
	Thread    ThreadID
	HasThread bool
	Watch     WatchKind
	WatchAddr uint64
	Raw       string
}

// Exited reports whether the reply says the target is gone (W or X).
func (s StopReply) Exited() bool { return s.Kind == 'W' || s.Kind == 'X' }

// Signals QEMU reports.
const (
	SigInt  = 2 // ^C, QMP stop, replay-break, the stop on connect
	SigTrap = 5 // breakpoint, watchpoint, step
)

// IsStopReply reports whether p looks like a stop reply rather than a command reply.
func IsStopReply(p []byte) bool {
	if len(p) < 3 {
		return false
	}
	switch p[0] {
	case 'T', 'S', 'W', 'X':
		_, ok := parseHexByte(p[1], p[2])
		return ok
	}
	return false
}

// ParseStopReply decodes "T05thread:p01.02;watch:fffff80000101100;", "S05", "W00" and "X09".
func ParseStopReply(p []byte) (StopReply, error) {
	if !IsStopReply(p) {
		return StopReply{}, fmt.Errorf("stop reply %q: %w", truncate(p), ErrMalformed)
	}
	sr := StopReply{Kind: p[0], Raw: string(p)}
	sr.Signal, _ = parseHexByte(p[1], p[2])
	if sr.Kind != 'T' {
		return sr, nil
	}
	rest := p[3:]
	for n := 0; len(rest) > 0; n++ {
		if n > 64 {
			return StopReply{}, fmt.Errorf("stop reply has more than 64 fields: %w", ErrMalformed)
		}
		var field []byte
		field, rest, _ = bytes.Cut(rest, []byte{';'})
		key, val, ok := bytes.Cut(field, []byte{':'})
		if !ok {
			return StopReply{}, fmt.Errorf("stop reply field %q: %w", truncate(field), ErrMalformed)
		}
		switch string(key) {
		case "thread":
			t, err := ParseThreadID(string(val))
			if err != nil {
				return StopReply{}, err
			}
			sr.Thread, sr.HasThread = t, true
		case "watch", "rwatch", "awatch":
			a, err := strconv.ParseUint(string(val), 16, 64)
			if err != nil {
				return StopReply{}, fmt.Errorf("watch address %q: %w", truncate(val), ErrMalformed)
			}
			sr.WatchAddr = a
			sr.Watch = map[string]WatchKind{"watch": WatchWrite, "rwatch": WatchRead, "awatch": WatchAccess}[string(key)]
		}
	}
	return sr, nil
}

func truncate(p []byte) string {
	if len(p) > 64 {
		return string(p[:64]) + "…"
	}
	return string(p)
}
