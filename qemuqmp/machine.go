package qemuqmp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/kdstub/kdstub/qemuqmp/qmp"
	"github.com/kdstub/kdstub/qemuqmp/ram"
	"github.com/kdstub/kdstub/qemuqmp/rsp"
)

// Errors of the Machine.
var (
	// ErrGone means QEMU exited, was killed or closed a connection; every call fails with it from then on.
	ErrGone = errors.New("qemu is gone")
	// ErrRunning means the call needs a stopped VM.
	ErrRunning = errors.New("vm is running")
	// ErrKVMSoftwareBreakpoint refuses Z0 under KVM, where QEMU implements it by writing 0xCC into guest RAM
	// (visible to the guest and to memory reads); use a Hardware breakpoint or set AllowKVMSoftwareBreakpoints.
	ErrKVMSoftwareBreakpoint = errors.New("software breakpoints write guest memory under KVM")
	// ErrUnsupported means QEMU offers no way to do what was asked.
	ErrUnsupported = errors.New("not supported by qemu")
)

// Config says how to reach a QEMU.
type Config struct {
	QMP string // "unix:/path", "tcp:host:port" or a socket path
	GDB string

	// SharedRAM is the mem-path of a share=on memory-backend-file; when set it is mapped and used for RAM.
	SharedRAM string
	// ScratchDir receives pmemsave files for bulk reads; default /dev/shm when writable, else os.TempDir().
	ScratchDir string
	// DisableBulk turns pmemsave off (reads then use the shared file or the gdbstub only).
	DisableBulk bool

	AllowKVMSoftwareBreakpoints bool
	Logger                      *slog.Logger
}

// Machine is the rest of the program's view of a QEMU guest: vCPU registers, physical memory, run control,
// emulator-side breakpoints and a stream of stop events.
//
// Run state has one source of truth, the gdbstub client's state: it flips to running when we resume and to
// stopped on every stop reply (QEMU reports QMP stops to the gdbstub too). The one thing the gdbstub is never
// told about, a QMP cont (for example through Monitor), is caught from the QMP RESUME event and confirmed with
// query-status before the state changes.
type Machine struct {
	log  *slog.Logger
	qmp  *qmp.Client
	gdb  *rsp.Client
	mem  *ram.Auto
	shm  *ram.Shared
	kvm  bool
	cfg  Config
	thr  []rsp.ThreadID
	regs []qmp.Region

	mu       sync.Mutex
	hmpCache map[int]hmpEntry // HMP-only registers per CPU, valid for one stop
	bps      map[Breakpoint]bool
	lastCPU  int
	halters  map[chan StopEvent]struct{} // Halt calls in progress: they take the next stop instead of Events
	gone     chan struct{}
	goneErr  error

	events  *eventQueue
	closing chan struct{}
	loopEnd chan struct{}
	once    sync.Once
}

// Connect attaches to a running QEMU through QMP and the gdbstub.
func Connect(ctx context.Context, cfg Config) (*Machine, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q, err := qmp.Dial(ctx, cfg.QMP, log.With("conn", "qmp"))
	if err != nil {
		return nil, err
	}
	g, err := rsp.Dial(ctx, cfg.GDB, log.With("conn", "gdbstub"))
	if err != nil {
		q.Close()
		return nil, err
	}
	m := &Machine{
		log: log, qmp: q, gdb: g, cfg: cfg, thr: g.Threads(),
		bps: map[Breakpoint]bool{}, hmpCache: map[int]hmpEntry{}, halters: map[chan StopEvent]struct{}{}, gone: make(chan struct{}),
		events: newEventQueue(), closing: make(chan struct{}), loopEnd: make(chan struct{}),
	}
	if err := m.setup(ctx); err != nil {
		g.Close()
		q.Close()
		return nil, err
	}
	go m.loop()
	// The connect itself may have stopped a running VM; anything that happened before is now settled.
	return m, nil
}

func (m *Machine) setup(ctx context.Context) error {
	kvm, err := m.qmp.QueryKVM(ctx)
	if err != nil {
		return fmt.Errorf("query-kvm: %w", err)
	}
	m.kvm = kvm.Enabled
	regions, err := m.qmp.MemoryMap(ctx)
	if err != nil {
		return fmt.Errorf("guest memory map: %w", err)
	}
	m.regs = regions
	m.mem = &ram.Auto{Small: m.gdb, SmallUnavailable: m.gdb.Running}
	if !m.cfg.DisableBulk {
		dir := m.cfg.ScratchDir
		if dir == "" {
			dir = os.TempDir()
			if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
				dir = "/dev/shm"
			}
		}
		m.mem.Bulk = &ram.Pmemsave{QMP: m.qmp, Dir: dir}
	}
	if m.cfg.SharedRAM != "" {
		maps := ram.MappingsFor(regions, qmp.RAMBlock(regions))
		if len(maps) == 0 {
			return fmt.Errorf("shared RAM %s: info mtree shows no RAM regions", m.cfg.SharedRAM)
		}
		shm, err := ram.OpenShared(m.cfg.SharedRAM, maps)
		if err != nil {
			return err
		}
		m.shm = shm
		m.mem.Shared = shm
	}
	return nil
}

// CPUCount is the number of vCPUs.
func (m *Machine) CPUCount() int { return len(m.thr) }

// KVM reports whether the VM runs under KVM (where software breakpoints are not stealthy).
func (m *Machine) KVM() bool { return m.kvm }

// MemoryMap returns the flat guest-physical map read at connect time.
func (m *Machine) MemoryMap() []qmp.Region { return append([]qmp.Region(nil), m.regs...) }

// Running reports whether the VM runs.
func (m *Machine) Running() bool { return m.gdb.Running() }

// Events delivers stop events (breakpoints, watchpoints, interrupts, resets, shutdown, and a final Gone)
// that nobody asked for synchronously: the stop a Stop/Halt causes is returned by Halt and not queued, so
// callers that stop the VM to inspect it and never read Events do not pile events up. A StopInterrupted still
// arrives here for a stop nobody waits for (a Stop whose context ended first, or a pause from elsewhere).
// The queue behind it is bounded; a consumer that never reads loses the oldest events, never blocks QEMU I/O.
func (m *Machine) Events() <-chan StopEvent { return m.events.Out() }

// Done is closed when QEMU is gone.
func (m *Machine) Done() <-chan struct{} { return m.gone }

func (m *Machine) thread(cpu int) (rsp.ThreadID, error) {
	if cpu < 0 || cpu >= len(m.thr) {
		return rsp.ThreadID{}, fmt.Errorf("cpu %d: machine has %d CPUs", cpu, len(m.thr))
	}
	return m.thr[cpu], nil
}

func (m *Machine) cpuOf(t rsp.ThreadID) int {
	for i, x := range m.thr {
		if x.TID == t.TID {
			return i
		}
	}
	return -1
}

// alive returns ErrGone once QEMU is gone.
func (m *Machine) alive() error {
	select {
	case <-m.gone:
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.goneErr
	default:
		return nil
	}
}

// wrap maps the clients' connection errors and run-state refusals onto the Machine's.
func (m *Machine) wrap(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrGone):
		return err
	case errors.Is(err, rsp.ErrGone), errors.Is(err, qmp.ErrGone):
		m.setGone(err)
		return fmt.Errorf("%w: %w", ErrGone, err)
	case errors.Is(err, rsp.ErrRunning):
		return fmt.Errorf("%w: %w", ErrRunning, err)
	}
	return err
}

func (m *Machine) setGone(cause error) {
	m.mu.Lock()
	select {
	case <-m.gone:
		m.mu.Unlock()
		return
	default:
	}
	m.goneErr = fmt.Errorf("%w: %v", ErrGone, cause)
	close(m.gone)
	m.mu.Unlock()
	m.events.push(StopEvent{Reason: StopGone, CPU: -1, Err: m.goneErr})
	m.gdb.Close()
	m.qmp.Close()
}

// Monitor runs an HMP command and returns its output. A "cont" issued here is noticed through the QMP
// RESUME event, so run state stays right.
func (m *Machine) Monitor(ctx context.Context, hmp string) (string, error) {
	if err := m.alive(); err != nil {
		return "", err
	}
	out, err := m.qmp.HMP(ctx, hmp)
	if err != nil {
		return out, m.wrap(err)
	}
	// The command may have resumed the VM ("cont", "c", "system_wakeup"…), which the gdbstub is not told;
	// settle the run state now rather than when the RESUME event gets processed, so that the next call does
	// not send a gdb packet into a running VM.
	if err := m.gdb.Reconcile(ctx, m.qmp.Running); err != nil {
		return out, m.wrap(err)
	}
	return out, nil
}

// QMP exposes the QMP client for commands the Machine does not wrap (query-replay, replay-break, …).
func (m *Machine) QMP() *qmp.Client { return m.qmp }

// ReadPort reads an I/O port (size 1, 2 or 4) through HMP.
func (m *Machine) ReadPort(ctx context.Context, port uint16, size int) (uint32, error) {
	if err := m.alive(); err != nil {
		return 0, err
	}
	v, err := m.qmp.PortIn(ctx, port, size)
	return v, m.wrap(err)
}

// WritePort writes an I/O port through HMP.
func (m *Machine) WritePort(ctx context.Context, port uint16, size int, value uint32) error {
	if err := m.alive(); err != nil {
		return err
	}
	return m.wrap(m.qmp.PortOut(ctx, port, size, value))
}

// Reset resets the machine (a StopReset event follows).
func (m *Machine) Reset(ctx context.Context) error {
	if err := m.alive(); err != nil {
		return err
	}
	return m.wrap(m.qmp.SystemReset(ctx))
}

// ReadPhysical reads guest-physical memory through the fastest backend that can serve the range.
func (m *Machine) ReadPhysical(ctx context.Context, pa uint64, buf []byte) error {
	if err := m.alive(); err != nil {
		return err
	}
	return m.wrap(m.mem.ReadPhysical(ctx, pa, buf))
}

// WritePhysical writes guest-physical memory (the shared file when it backs the range, else the gdbstub).
func (m *Machine) WritePhysical(ctx context.Context, pa uint64, buf []byte) error {
	if err := m.alive(); err != nil {
		return err
	}
	return m.wrap(m.mem.WritePhysical(ctx, pa, buf))
}

// ReadVirtual reads through cpu's page tables (the gdbstub's virtual mode) and returns how many leading bytes
// were readable; an unmapped page ends the read with an error.
func (m *Machine) ReadVirtual(ctx context.Context, cpu int, va uint64, buf []byte) (int, error) {
	t, err := m.thread(cpu)
	if err != nil {
		return 0, err
	}
	if err := m.alive(); err != nil {
		return 0, err
	}
	n, err := m.gdb.ReadMemory(ctx, t, va, buf, false)
	return n, m.wrap(err)
}

// WriteVirtual writes through cpu's page tables and returns how many leading bytes were written.
func (m *Machine) WriteVirtual(ctx context.Context, cpu int, va uint64, buf []byte) (int, error) {
	t, err := m.thread(cpu)
	if err != nil {
		return 0, err
	}
	if err := m.alive(); err != nil {
		return 0, err
	}
	n, err := m.gdb.WriteMemory(ctx, t, va, buf, false)
	return n, m.wrap(err)
}

// Backends exposes the individual RAM backends (for benchmarks and cross-checks): the gdbstub, pmemsave
// (nil when disabled) and the shared file (nil without one).
func (m *Machine) Backends() (gdb, pmemsave, shared ram.Backend) {
	gdb = m.gdb
	if m.mem.Bulk != nil {
		pmemsave = m.mem.Bulk
	}
	if m.shm != nil {
		shared = m.shm
	}
	return gdb, pmemsave, shared
}

// Close detaches (D;1: QEMU drops every breakpoint and resumes the VM, as after a real debugger detaches) when
// QEMU is still there, and closes both connections.
func (m *Machine) Close() error {
	m.once.Do(func() {
		if m.alive() == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if m.gdb.Running() {
				_ = m.Stop(ctx)
			}
			if err := m.gdb.Detach(ctx); err != nil {
				m.log.Debug("detach", "err", err)
			}
			cancel()
		}
		close(m.closing)
		m.gdb.Close()
		m.qmp.Close()
		<-m.loopEnd
		if m.shm != nil {
			m.shm.Close()
		}
		m.events.close()
	})
	return nil
}

// GDB exposes the gdbstub client, for diagnostics and for benchmarks that need the raw protocol.
func (m *Machine) GDB() *rsp.Client { return m.gdb }
