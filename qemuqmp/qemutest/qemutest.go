// Package qemutest starts real QEMU processes for tests: always -accel tcg, unique sockets in t.TempDir(),
// optional shared-memory RAM and record/replay, cleaned up (only this test's process and files) at the end.
// It also builds the tiny multiboot test guest (tinyguest/) that the qemuqmp tests run against.
package qemutest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kdstub/kdstub/qemuqmp"
)

// Options select what to start. The zero value boots the tiny guest paused on one vCPU with 128 MiB.
type Options struct {
	SMP       int
	MemoryMB  int
	SharedRAM bool   // back guest RAM with a share=on file in /dev/shm (removed at cleanup)
	Kernel    string // default: the tiny guest
	Running   bool   // start without -S

	RRMode     string // "record" or "replay"
	RRFile     string // default: <dir>/replay.bin
	RRSnapshot bool   // rrsnapshot=init plus a qcow2 (made with qemu-img) for reverse debugging
	RRDisk     string // reuse a qcow2 (replay must use the disk its recording used)
	Dir        string // reuse a directory (replay next to its recording); default t.TempDir()

	ExtraArgs []string
}

// QEMU is a started QEMU.
type QEMU struct {
	*qemuqmp.Process
	Dir       string
	SharedRAM string // path of the RAM file, "" without SharedRAM
	RRFile    string
	RRDisk    string
	Guest     *Guest // nil when a custom Kernel was given
	stderr    *lockedBuilder
}

// Stderr returns what QEMU has written to stderr so far.
func (q *QEMU) Stderr() string { return q.stderr.String() }

// Start launches QEMU for t and registers cleanup (kill, remove files). Without qemu-system-x86_64 the test
// is skipped, or failed when CI is set.
func Start(t testing.TB, o Options) *QEMU {
	t.Helper()
	requireTool(t, "qemu-system-x86_64")
	q := &QEMU{Dir: o.Dir, stderr: &lockedBuilder{}}
	if q.Dir == "" {
		q.Dir = t.TempDir()
	}
	kernel := o.Kernel
	if kernel == "" {
		q.Guest = TinyGuest(t)
		kernel = q.Guest.ELF32
	}
	cfg := qemuqmp.LaunchConfig{
		Dir: q.Dir, Kernel: kernel, MemoryMB: o.MemoryMB, SMP: o.SMP, Accel: "tcg", Paused: !o.Running,
		ExtraArgs: o.ExtraArgs, Stderr: q.stderr, DieWithParent: true,
	}
	if o.SharedRAM {
		f, err := os.CreateTemp("/dev/shm", "kdstub-test-ram-*")
		if err != nil {
			f, err = os.CreateTemp("", "kdstub-test-ram-*")
		}
		if err != nil {
			t.Fatalf("shared RAM file: %v", err)
		}
		q.SharedRAM = f.Name()
		f.Close()
		os.Remove(q.SharedRAM) // QEMU creates it
		t.Cleanup(func() { os.Remove(q.SharedRAM) })
		cfg.SharedRAM = q.SharedRAM
	}
	if o.RRMode != "" {
		requireTool(t, "qemu-img")
		q.RRFile = o.RRFile
		if q.RRFile == "" {
			q.RRFile = filepath.Join(q.Dir, "replay.bin")
		}
		cfg.RRMode, cfg.RRFile = o.RRMode, q.RRFile
		if o.RRSnapshot {
			q.RRDisk = o.RRDisk
			if q.RRDisk == "" {
				q.RRDisk = filepath.Join(q.Dir, "rr.qcow2")
				if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", q.RRDisk, "64M").CombinedOutput(); err != nil {
					t.Fatalf("qemu-img create: %v: %s", err, out)
				}
			}
			cfg.RRSnapshot, cfg.RRDisk = "init", q.RRDisk
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := qemuqmp.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start qemu: %v\nstderr: %s", err, q.Stderr())
	}
	q.Process = p
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Logf("kill qemu: %v", err)
		}
	})
	return q
}

// Connect attaches a Machine to this QEMU and closes it at cleanup.
func (q *QEMU) Connect(t testing.TB, cfg qemuqmp.Config) *qemuqmp.Machine {
	t.Helper()
	cfg.QMP, cfg.GDB = "unix:"+q.QMPSocket, "unix:"+q.GDBSocket
	if cfg.SharedRAM == "" {
		cfg.SharedRAM = q.SharedRAM
	}
	if cfg.ScratchDir == "" {
		cfg.ScratchDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := qemuqmp.Connect(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to qemu: %v\nstderr: %s", err, q.Stderr())
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// String describes the instance for failure messages.
func (q *QEMU) String() string { return fmt.Sprintf("qemu pid %d in %s", q.Pid(), q.Dir) }
