package kdproto

import (
	"context"
	"fmt"
	"sync"
)

// HostSession is the debugger end of a KD session: the built-in client (`kdstub kd`) and tests. A Client
// builds high-level commands on Request, BreakIn and WaitStateChange.
type HostSession struct {
	*Session
	reqMu sync.Mutex // one manipulate request outstanding at a time, as KD requires
}

// NewHost builds a host-role session over t; call Run to start it.
func NewHost(t Transport, cfg Config) *HostSession {
	cfg.Role = RoleHost
	return &HostSession{Session: newSession(t, cfg)}
}

// StateChanges delivers the target's state changes (stops, module loads).
func (s *HostSession) StateChanges() <-chan *StateChange { return s.states }

// WaitStateChange returns the next state change.
func (s *HostSession) WaitStateChange(ctx context.Context) (*StateChange, error) {
	select {
	case sc := <-s.states:
		return sc, nil
	case <-s.done:
		return nil, fmt.Errorf("wait for state change: %w: %w", ErrSessionClosed, s.err)
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for state change: %w", ctx.Err())
	}
}

// BreakIn sends the break-in byte, repeating it every RetransmitInterval, until a state change arrives, and
// returns that state change. A state change already queued (e.g. re-sent by the target after a RESET) is
// returned at once: it is not drained, because a target that is already stopped ignores break-ins.
func (s *HostSession) BreakIn(ctx context.Context) (*StateChange, error) {
	if err := s.do(ctx, func(ls *loopState) { ls.breakinActive = true; ls.sendBreakin(); ls.rearm() }); err != nil {
		return nil, fmt.Errorf("break in: %w", err)
	}
	sc, err := s.WaitStateChange(ctx)
	stop, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	_ = s.do(stop, func(ls *loopState) { ls.breakinActive = false; ls.rearm() })
	if err != nil {
		return nil, fmt.Errorf("break in: %w", err)
	}
	return sc, nil
}

// Reset sends RESET and waits for the target's RESET, re-sending every RetransmitInterval up to MaxTries.
// Afterwards both sides' ids are resynchronised; the target re-sends its pending state change, if any, which
// arrives on StateChanges.
func (s *HostSession) Reset(ctx context.Context) error {
	done := make(chan error, 1)
	if err := s.do(ctx, func(ls *loopState) {
		if ls.resetWaiter != nil {
			ls.resetWaiter <- fmt.Errorf("superseded by a newer Reset")
		}
		ls.resetWaiter, ls.resetTries = done, 0
		ls.sendReset()
		ls.rearm()
	}); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("reset: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("reset: %w", ctx.Err())
	}
}

// Request sends a manipulate request and returns the target's response (the next manipulate packet with the
// same ApiNumber). For APIs without a response (NoReply) it returns nil once the request is acknowledged.
func (s *HostSession) Request(ctx context.Context, m *Manipulate) (*Manipulate, error) {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	// Drop responses left over from an abandoned request so they cannot answer this one.
	for drained := false; !drained; {
		select {
		case <-s.manips:
		default:
			drained = true
		}
	}
	data, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	name := APIName(m.APINumber)
	if err := s.send(ctx, PacketTypeManipulate, data, false); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if NoReply(m.APINumber) {
		return nil, nil
	}
	for {
		select {
		case r := <-s.manips:
			if r.APINumber == m.APINumber {
				return r, nil
			}
			s.log.Warn("kd: unexpected manipulate response", "want", name, "got", APIName(r.APINumber))
		case <-s.done:
			return nil, fmt.Errorf("%s: %w: %w", name, ErrSessionClosed, s.err)
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: wait for response: %w", name, ctx.Err())
		}
	}
}
