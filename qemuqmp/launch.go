package qemuqmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// LaunchConfig describes a QEMU process to start.
type LaunchConfig struct {
	Binary    string // default "qemu-system-x86_64"
	Dir       string // where the QMP and gdbstub sockets are created (required; use a per-run temp dir)
	QMPSocket string // optional explicit socket paths; default Dir/qmp.sock and Dir/gdb.sock
	GDBSocket string
	Kernel    string // multiboot ELF32 passed with -kernel (optional)
	MemoryMB  int    // default 128
	SMP       int    // default 1
	Accel     string // default "tcg"; KVM makes software breakpoints write guest memory (qemu.md §8)
	Machine   string // default "pc"
	Paused    bool   // -S: start with the vCPUs stopped
	SharedRAM string // when set, guest RAM is a share=on memory-backend-file at this path (QEMU creates it)
	Disk      string // optional disk image attached as an IDE drive (format detected from the extension: .qcow2 or raw)

	// Record/replay: RRMode "record" or "replay" adds -icount shift=auto,rr=MODE,rrfile=RRFile. RRSnapshot
	// (e.g. "init") adds rrsnapshot= and needs RRDisk, a qcow2 that holds the snapshots; reverse debugging
	// (bs/bc) and replay-seek need both.
	RRMode     string
	RRFile     string
	RRSnapshot string
	RRDisk     string

	ExtraArgs []string
	// DieWithParent makes the kernel kill QEMU when the starting process dies (Linux PR_SET_PDEATHSIG), so a
	// test binary killed by a timeout leaves no QEMU behind.
	DieWithParent bool
	Stdout        io.Writer // QEMU's stdout/stderr; nil discards
	Stderr        io.Writer
	Logger        *slog.Logger
}

// Process is a running QEMU.
type Process struct {
	QMPSocket string
	GDBSocket string
	Args      []string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
	once sync.Once
}

// args builds the command line for cfg (without the binary) and returns the socket paths.
func (cfg LaunchConfig) args() ([]string, string, string, error) {
	if cfg.Dir == "" {
		return nil, "", "", errors.New("launch qemu: LaunchConfig.Dir is required")
	}
	mem := cfg.MemoryMB
	if mem == 0 {
		mem = 128
	}
	smp := cfg.SMP
	if smp == 0 {
		smp = 1
	}
	accel := cfg.Accel
	if accel == "" {
		accel = "tcg"
	}
	machine := cfg.Machine
	if machine == "" {
		machine = "pc"
	}
	qmpSock, gdbSock := cfg.QMPSocket, cfg.GDBSocket
	if qmpSock == "" {
		qmpSock = filepath.Join(cfg.Dir, "qmp.sock")
	}
	if gdbSock == "" {
		gdbSock = filepath.Join(cfg.Dir, "gdb.sock")
	}
	a := []string{
		"-accel", accel, "-nodefaults", "-display", "none", "-serial", "none", "-monitor", "none",
		"-m", strconv.Itoa(mem) + "M", "-smp", strconv.Itoa(smp),
		"-qmp", "unix:" + qmpSock + ",server=on,wait=off",
		"-gdb", "unix:" + gdbSock + ",server=on,wait=off",
	}
	if cfg.Paused {
		a = append(a, "-S")
	}
	if cfg.SharedRAM != "" {
		a = append(a, "-object", fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=%s,share=on", mem, cfg.SharedRAM),
			"-machine", machine+",memory-backend=mem")
	} else {
		a = append(a, "-machine", machine)
	}
	if cfg.Kernel != "" {
		a = append(a, "-kernel", cfg.Kernel)
	}
	if cfg.Disk != "" {
		format := "raw"
		if filepath.Ext(cfg.Disk) == ".qcow2" {
			format = "qcow2"
		}
		a = append(a, "-drive", fmt.Sprintf("file=%s,format=%s,if=ide", cfg.Disk, format))
	}
	switch cfg.RRMode {
	case "":
	case "record", "replay":
		if cfg.RRFile == "" {
			return nil, "", "", errors.New("launch qemu: RRMode needs RRFile")
		}
		if smp > 1 {
			return nil, "", "", errors.New("launch qemu: QEMU 7.2 record/replay refuses -smp > 1")
		}
		ic := fmt.Sprintf("shift=auto,rr=%s,rrfile=%s", cfg.RRMode, cfg.RRFile)
		if cfg.RRSnapshot != "" {
			if cfg.RRDisk == "" {
				return nil, "", "", errors.New("launch qemu: RRSnapshot needs RRDisk (a qcow2 for the snapshots)")
			}
			ic += ",rrsnapshot=" + cfg.RRSnapshot
		}
		a = append(a, "-icount", ic)
		if cfg.RRDisk != "" {
			a = append(a, "-drive", "file="+cfg.RRDisk+",if=none,id=rr")
		}
	default:
		return nil, "", "", fmt.Errorf("launch qemu: RRMode %q: want record or replay", cfg.RRMode)
	}
	a = append(a, cfg.ExtraArgs...)
	return a, qmpSock, gdbSock, nil
}

// Start launches QEMU and waits (bounded by ctx) until its QMP and gdbstub sockets exist. The process outlives
// ctx; stop it with Kill or a QMP quit.
func Start(ctx context.Context, cfg LaunchConfig) (*Process, error) {
	args, qmpSock, gdbSock, err := cfg.args()
	if err != nil {
		return nil, err
	}
	bin := cfg.Binary
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	for _, s := range []string{qmpSock, gdbSock} {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("launch qemu: remove stale socket: %w", err)
		}
	}
	cmd := exec.Command(bin, args...)
	if cfg.DieWithParent {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	cmd.Stdout, cmd.Stderr = cfg.Stdout, cfg.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = io.Discard
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("launch %s: %w", bin, err)
	}
	p := &Process{QMPSocket: qmpSock, GDBSocket: gdbSock, Args: args, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if cfg.Logger != nil {
		cfg.Logger.Debug("qemu started", "pid", cmd.Process.Pid, "args", args)
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if exists(qmpSock) && exists(gdbSock) {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("qemu exited during startup: %v", p.err)
		case <-ctx.Done():
			p.Kill()
			return nil, fmt.Errorf("waiting for qemu sockets in %s: %w", cfg.Dir, ctx.Err())
		case <-tick.C:
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Pid is QEMU's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Wait waits for the process to exit (bounded by ctx) and returns its exit error.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Terminate asks this QEMU process to shut down with SIGTERM, which QEMU handles like a monitor quit (a
// record/replay log gets its header only on such a clean exit), and waits for it up to ctx; it does not kill.
func (p *Process) Terminate(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("terminate qemu pid %d: %w", p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("terminate qemu pid %d: %w", p.cmd.Process.Pid, ctx.Err())
	}
}

// Kill kills this QEMU process (only it, by pid) and reaps it.
func (p *Process) Kill() error {
	var err error
	p.once.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		if e := p.cmd.Process.Kill(); e != nil && !errors.Is(e, os.ErrProcessDone) {
			err = fmt.Errorf("kill qemu pid %d: %w", p.cmd.Process.Pid, e)
			return
		}
		<-p.done
	})
	return err
}
