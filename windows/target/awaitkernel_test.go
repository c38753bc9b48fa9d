package target

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/amd64"
)

// bootingMachine is a one-CPU machine whose kernel is not up yet (fault injection for the hold-until-kernel
// path; the real-QEMU case is e2e's TestBreakInBeforeKernelWaitsForKernel). It counts run-control calls.
type bootingMachine struct {
	mu        sync.Mutex
	running   bool
	stops     int
	continues int
	events    chan Stop
}

func (m *bootingMachine) CPUCount() int { return 1 }
func (m *bootingMachine) Registers(ctx context.Context, cpu int) (amd64.Registers, error) {
	return amd64.Registers{RIP: 0xfffff80000001000, CS: kernelCS}, nil
}
func (m *bootingMachine) SetRegisters(context.Context, int, amd64.Registers, amd64.Groups) error {
	return nil
}
func (m *bootingMachine) ReadPhysical(ctx context.Context, pa uint64, buf []byte) error {
	clear(buf)
	return nil
}
func (m *bootingMachine) WritePhysical(context.Context, uint64, []byte) error { return nil }
func (m *bootingMachine) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running
}
func (m *bootingMachine) Stop(ctx context.Context) (Stop, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running = false
	m.stops++
	return Stop{Reason: StopInterrupted}, nil
}
func (m *bootingMachine) Continue(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running = true
	m.continues++
	return nil
}
func (m *bootingMachine) Step(context.Context, int) (Stop, error)            { return Stop{Reason: StopStep}, nil }
func (m *bootingMachine) AddBreakpoint(context.Context, Breakpoint) error    { return nil }
func (m *bootingMachine) RemoveBreakpoint(context.Context, Breakpoint) error { return nil }
func (m *bootingMachine) Events() <-chan Stop                                { return m.events }

func (m *bootingMachine) counts() (running bool, stops, continues int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running, m.stops, m.continues
}

// lateKernel fails discovery until it has been asked failures times.
type lateKernel struct {
	mu       sync.Mutex
	failures int // -1: never succeeds
	calls    int
}

func (d *lateKernel) Discover(ctx context.Context) (*Kernel, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if d.failures < 0 || d.calls <= d.failures {
		return nil, errors.New("paging is disabled (CR0.PG=0)")
	}
	return &Kernel{Build: 19041, KernBase: 0xfffff80000000000}, nil
}

func (d *lateKernel) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls
}

func TestBreakInHeldUntilKernelDiscoverable(t *testing.T) {
	for _, startRunning := range []bool{false, true} {
		name := map[bool]string{false: "paused", true: "running"}[startRunning]
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			m := &bootingMachine{running: startRunning, events: make(chan Stop)}
			disc := &lateKernel{failures: 3}
			tg, err := New(ctx, Config{Machine: m, Discoverer: disc})
			require.NoError(t, err)

			require.NoError(t, tg.Break(ctx))
			running, _, _ := m.counts()
			require.True(t, running, "the break-in lets the guest run while the kernel is not discoverable")
			sc, err := tg.Stopped(ctx)
			require.NoError(t, err)
			require.Nil(t, sc, "no stop reported yet")

			sc, err = tg.WaitStop(ctx)
			require.NoError(t, err)
			require.Equal(t, uint64(0xfffff80000001000), sc.ProgramCounter)
			running, stops, continues := m.counts()
			require.False(t, running, "stopped for the reported break-in")
			require.Equal(t, 4, disc.count(), "discovery retried until it succeeded")
			wantStops := 3 // the first attempt finds the guest already stopped
			if startRunning {
				wantStops = 4
			}
			require.Equal(t, wantStops, stops, "one stop per discovery attempt")
			require.Equal(t, 3, continues, "resumed after every failed attempt")
			gv, err := tg.GetVersion(ctx)
			require.NoError(t, err)
			require.Equal(t, uint64(0xfffff80000000000), gv.KernBase)
		})
	}
}

func TestHeldBreakInEndsWithContextGuestRunning(t *testing.T) {
	m := &bootingMachine{events: make(chan Stop)}
	disc := &lateKernel{failures: -1}
	tg, err := New(context.Background(), Config{Machine: m, Discoverer: disc})
	require.NoError(t, err)
	require.NoError(t, tg.Break(context.Background()))

	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = tg.WaitStop(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second, "bounded by the caller's context")
	running, stops, continues := m.counts()
	require.True(t, running, "an abandoned break-in leaves the guest running")
	require.Equal(t, stops+1, continues, "the initial pause and every probe stop were resumed")
	require.GreaterOrEqual(t, disc.count(), 2, "discovery was retried")

	// A later break-in starts over rather than reporting the abandoned one.
	tg.mu.Lock()
	held := tg.awaitKernel
	tg.mu.Unlock()
	require.False(t, held)
}
