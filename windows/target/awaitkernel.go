package target

import (
	"context"
	"fmt"
	"time"

	"github.com/kdstub/kdstub/kdproto"
)

// A debug-mode kernel answers a break-in only once KD is initialised; before that (firmware, boot loader,
// early boot stub) the break-in byte just waits. A break-in while the kernel cannot be discovered is held the
// same way: the guest keeps running and is probed (stop, discover, resume) on a growing interval until the
// kernel is found, and only then is the break-in reported.
const (
	kernelPollFirst = 100 * time.Millisecond
	kernelPollMax   = time.Second
	// resumeTimeout bounds the resume that leaves the guest running when a probe is abandoned (the caller's
	// context may already be done then).
	resumeTimeout = 5 * time.Second
)

// holdBreakIn decides, with the guest stopped for a break-in, whether the break-in must wait for the kernel.
// If discovery fails it logs why, resumes the guest, marks the break-in as waiting and returns true; WaitStop
// then reports it once the kernel is found. Callers hold t.mu.
func (t *Target) holdBreakIn(ctx context.Context) (bool, error) {
	err := t.discover(ctx)
	if err == nil {
		return false, nil
	}
	t.log.Info("kernel not discoverable yet; letting the guest run until it is", "reason", err)
	t.awaitKernel = true
	if err := t.resume(ctx); err != nil {
		t.awaitKernel = false
		return false, err
	}
	return true, nil
}

// resume lets the guest run again after a probe, even when ctx is already done. Callers hold t.mu.
func (t *Target) resume(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resumeTimeout)
	defer cancel()
	t.invalidate()
	t.running = true
	if err := t.m.Continue(rctx); err != nil {
		t.running = false
		return fmt.Errorf("resume the guest until the kernel is up: %w", err)
	}
	return nil
}

// waitKernel probes a running guest on a bounded backoff until the kernel is discoverable, then returns the
// held break-in's state change. A done ctx abandons the break-in (its session is gone) with the guest running.
func (t *Target) waitKernel(ctx context.Context) (*kdproto.StateChange, error) {
	delay := kernelPollFirst
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			t.mu.Lock()
			t.awaitKernel = false
			t.mu.Unlock()
			return nil, ctx.Err()
		case <-timer.C:
		}
		sc, done, err := t.probeKernel(ctx)
		if done {
			return sc, err
		}
		delay = min(2*delay, kernelPollMax)
		timer.Reset(delay)
	}
}

// probeKernel stops the guest and tries discovery once. done reports that the wait is over: the kernel was
// found (or a debugger-visible stop beat the probe) and sc is the stop to report, or err ended it.
func (t *Target) probeKernel(ctx context.Context) (sc *kdproto.StateChange, done bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.drainEvents() // a reset while waiting only keeps the pending discovery pending
	ev, err := t.m.Stop(ctx)
	if err != nil {
		t.awaitKernel = false
		if ctx.Err() != nil {
			return nil, true, ctx.Err()
		}
		return nil, true, fmt.Errorf("stop the guest to look for the kernel: %w", err)
	}
	if ev.Reason == StopGone {
		t.awaitKernel = false
		return nil, true, fmt.Errorf("stop the guest to look for the kernel: %w: %v", ErrGone, ev.Err)
	}
	t.running = false
	t.invalidate()
	if ev.Reason == StopInterrupted {
		if derr := t.discover(ctx); derr != nil {
			t.log.Debug("kernel still not discoverable", "err", derr)
			if err := t.resume(ctx); err != nil {
				t.awaitKernel = false
				return nil, true, err
			}
			return nil, false, nil
		}
	}
	t.awaitKernel = false
	sc, err = t.onStop(ctx, ev)
	if err != nil {
		return nil, true, err
	}
	return sc, true, nil
}
