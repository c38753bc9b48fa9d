package target

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/kdstub/kdstub/internal/amd64"
	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/windows/paging"
)

// Config configures a Target.
type Config struct {
	Machine Machine
	// Discoverer finds the kernel at New and after every guest reset. Kernel may be given instead (tests);
	// when both are set Kernel is used first and Discoverer after resets.
	Discoverer Discoverer
	Kernel     *Kernel
	Logger     *slog.Logger
}

// Target is the KD target semantics of a Windows guest (kdproto.Target).
//
// While the guest runs, only Break and WaitStop are meaningful; every other method assumes a stopped guest,
// which is how the KD server calls it (a real kernel answers manipulate requests only from inside the debugger).
type Target struct {
	m    Machine
	disc Discoverer
	log  *slog.Logger

	mu            sync.Mutex
	k             *Kernel
	kdbgSpans     []physSpan // where the KDBG lives physically, for physical-read overlays
	flagPA        uint64
	flagPAKnown   bool
	rediscover    bool // a reset happened: discover again at the next stop
	running       bool
	current       int                     // the CPU the debugger talks to
	pending       *kdproto.StateChange    // the stop being reported while stopped
	queued        *kdproto.StateChange    // a stop WaitStop returns without waiting (step, break while stopped)
	regs          map[int]amd64.Registers // register cache while stopped
	spaces        map[uint64]*paging.AddressSpace
	dr            []debugRegs                // the debugger's view of DR0-3/6/7 per CPU (shadow; never in the guest)
	bps           [maxBreakpoints + 1]uint64 // handle → VA (0 = free); index 0 unused
	bpRefs        map[uint64]int             // VA → handles using it (one emulator breakpoint per VA)
	hwArmed       map[Breakpoint]bool        // emulator breakpoints/watchpoints derived from the DR shadow
	traceNextStep bool                       // SetContext asked for EFLAGS.TF: the next continue steps
	awaitKernel   bool                       // a break-in waits, guest running, until the kernel is discoverable

	kick chan struct{} // Break → WaitStop: a stop was queued
}

// maxBreakpoints is the size of the Windows breakpoint table (handles 1..32).
const maxBreakpoints = 32

// physSpan maps a piece of the decoded KDBG to guest-physical memory.
type physSpan struct {
	pa       uint64
	plainOff int
	n        int
}

var _ kdproto.Target = (*Target)(nil)

// New builds a Target and discovers the kernel.
func New(ctx context.Context, cfg Config) (*Target, error) {
	if cfg.Machine == nil {
		return nil, errors.New("windows target: no machine")
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	n := cfg.Machine.CPUCount()
	if n <= 0 {
		return nil, fmt.Errorf("windows target: machine reports %d CPUs", n)
	}
	t := &Target{
		m: cfg.Machine, disc: cfg.Discoverer, log: lg,
		running: cfg.Machine.Running(),
		regs:    map[int]amd64.Registers{}, spaces: map[uint64]*paging.AddressSpace{},
		dr: make([]debugRegs, n), bpRefs: map[uint64]int{}, hwArmed: map[Breakpoint]bool{},
		kick: make(chan struct{}, 1),
	}
	for i := range t.dr {
		t.dr[i] = resetDebugRegs()
	}
	t.drainEvents() // stops from before this target existed are not its business
	k := cfg.Kernel
	if k == nil {
		if cfg.Discoverer == nil {
			return nil, errors.New("windows target: neither Kernel nor Discoverer given")
		}
		// Discovery needs registers, hence a stopped guest: it happens at the first stop (a break-in), so
		// attaching does not stop the guest.
		t.rediscover = true
		return t, nil
	}
	if err := k.validate(); err != nil {
		return nil, fmt.Errorf("windows target: %w", err)
	}
	t.setKernel(ctx, k)
	return t, nil
}

// ensureKernel runs a pending discovery (first stop, or after a reset). Failure is logged and retried at
// the next stop; requests that need kernel facts fail meanwhile. Callers hold t.mu; the guest is stopped.
func (t *Target) ensureKernel(ctx context.Context) {
	if err := t.discover(ctx); err != nil {
		t.log.Warn("discover the kernel", "err", err)
	}
}

// discover runs a pending discovery and returns why it failed, without logging the failure (callers that
// retry decide how loud to be). Callers hold t.mu; the guest is stopped.
func (t *Target) discover(ctx context.Context) error {
	if !t.rediscover || t.disc == nil {
		return nil
	}
	k, err := t.disc.Discover(ctx)
	if err == nil {
		err = k.validate()
	}
	if err != nil {
		return err
	}
	t.setKernel(ctx, k)
	t.rediscover = false
	t.log.Info("kernel discovered", "base", fmt.Sprintf("%#x", k.KernBase), "build", k.Build,
		"kdbg", fmt.Sprintf("%#x", k.KDBG))
	return nil
}

// Kernel returns the kernel facts in use.
func (t *Target) Kernel() *Kernel {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.k
}

// setKernel installs discovery results and locates the KDBG physically for physical-read overlays.
func (t *Target) setKernel(ctx context.Context, k *Kernel) {
	t.k = k
	t.kdbgSpans, t.flagPAKnown = nil, false
	if k.KernelCR3 == 0 {
		return
	}
	as := paging.New(t.m, k.KernelCR3, paging.ModeX64)
	for off := 0; off < len(k.KDBGPlain); {
		va := k.KDBG + uint64(off)
		n := min(int(pageSize-va%pageSize), len(k.KDBGPlain)-off)
		if pa, err := as.Translate(ctx, va); err == nil {
			t.kdbgSpans = append(t.kdbgSpans, physSpan{pa: pa, plainOff: off, n: n})
		}
		off += n
	}
	if k.KdpDataBlockEncoded != 0 {
		if pa, err := as.Translate(ctx, k.KdpDataBlockEncoded); err == nil {
			t.flagPA, t.flagPAKnown = pa, true
		}
	}
}

// NumberProcessors implements kdproto.Target.
func (t *Target) NumberProcessors() int { return t.m.CPUCount() }

// GetVersion synthesises DBGKD_GET_VERSION64 from the discovered kernel (kd-protocol.md §4).
func (t *Target) GetVersion(ctx context.Context) (*kdproto.GetVersion64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ensureKernel(ctx)
	if t.k == nil {
		return nil, errNoKernel
	}
	return kdproto.DefaultGetVersion64(t.k.Build, t.k.KernBase, t.k.PsLoadedModuleList, t.k.DebuggerDataList), nil
}

// checkCPU validates a processor index from a request.
func (t *Target) checkCPU(cpu int) error {
	if cpu < 0 || cpu >= t.m.CPUCount() {
		return kdproto.NewStatusError(kdproto.StatusUnsuccessful, fmt.Errorf("cpu %d: the guest has %d", cpu, t.m.CPUCount()))
	}
	return nil
}

// registers returns cpu's registers, cached until the guest resumes. Callers hold t.mu.
func (t *Target) registers(ctx context.Context, cpu int) (amd64.Registers, error) {
	if err := t.checkCPU(cpu); err != nil {
		return amd64.Registers{}, err
	}
	if r, ok := t.regs[cpu]; ok {
		return r, nil
	}
	r, err := t.m.Registers(ctx, cpu)
	if err != nil {
		return amd64.Registers{}, fmt.Errorf("registers of cpu %d: %w", cpu, err)
	}
	t.regs[cpu] = r
	return r, nil
}

// setRegisters writes the groups of r and refreshes the cache. Callers hold t.mu.
func (t *Target) setRegisters(ctx context.Context, cpu int, r amd64.Registers, which amd64.Groups) error {
	if which == 0 {
		return nil
	}
	delete(t.regs, cpu)
	if err := t.m.SetRegisters(ctx, cpu, r, which); err != nil {
		return fmt.Errorf("write registers of cpu %d: %w", cpu, err)
	}
	if which&amd64.HaveControl != 0 {
		t.spaces = map[uint64]*paging.AddressSpace{} // CR3/CR4 may have changed
	}
	return nil
}

// invalidate drops everything cached about guest state; called on every resume.
func (t *Target) invalidate() {
	t.regs = map[int]amd64.Registers{}
	t.spaces = map[uint64]*paging.AddressSpace{}
}

// kpcr returns cpu's KPCR address. Callers hold t.mu.
func (t *Target) kpcr(ctx context.Context, cpu int) (uint64, error) {
	if t.k != nil && cpu < len(t.k.KPCR) && t.k.KPCR[cpu] != 0 {
		return t.k.KPCR[cpu], nil
	}
	r, err := t.registers(ctx, cpu)
	if err != nil {
		return 0, err
	}
	switch {
	case r.GSBase>>63 == 1:
		return r.GSBase, nil
	case r.KernelGSBase>>63 == 1:
		return r.KernelGSBase, nil
	}
	return 0, fmt.Errorf("cpu %d: neither GS base %#x nor KernelGSBase %#x is a kernel address", cpu, r.GSBase, r.KernelGSBase)
}

// kprcb returns cpu's KPRCB address. Callers hold t.mu.
func (t *Target) kprcb(ctx context.Context, cpu int) (uint64, error) {
	pcr, err := t.kpcr(ctx, cpu)
	if err != nil {
		return 0, err
	}
	return pcr + t.k.pcrContainedPrcb(), nil // nil-safe: defaults without a kernel
}

// currentThread reads KPRCB.CurrentThread of cpu. Callers hold t.mu.
func (t *Target) currentThread(ctx context.Context, cpu int) (uint64, error) {
	prcb, err := t.kprcb(ctx, cpu)
	if err != nil {
		return 0, err
	}
	var b [8]byte
	if n, err := t.readVirtual(ctx, cpu, prcb+t.k.prcbCurrentThread(), b[:]); err != nil || n != 8 {
		return 0, fmt.Errorf("read KPRCB.CurrentThread of cpu %d at %#x: %w", cpu, prcb+t.k.prcbCurrentThread(), err)
	}
	return le64(b[:]), nil
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
