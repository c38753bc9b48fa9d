package kdproto

import (
	"context"
	"fmt"
)

// TargetSession is the debuggee end of a KD session, as the stub plays it. A Server reads Requests and
// BreakIns, drives the machine, and answers through Respond and SendStateChange.
type TargetSession struct {
	*Session
}

// NewTarget builds a target-role session over t; call Run to start it.
func NewTarget(t Transport, cfg Config) *TargetSession {
	cfg.Role = RoleTarget
	return &TargetSession{newSession(t, cfg)}
}

// Requests delivers the debugger's manipulate requests, already acknowledged and de-duplicated.
func (s *TargetSession) Requests() <-chan *Manipulate { return s.manips }

// BreakIns signals break-in requests (0x62). Several bytes in a row coalesce into one signal. Whether to act
// on it (only while running) is the server's decision.
func (s *TargetSession) BreakIns() <-chan struct{} { return s.breakins }

// Respond sends the response to a request and waits for its acknowledgement.
func (s *TargetSession) Respond(ctx context.Context, m *Manipulate) error {
	data, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	return s.send(ctx, PacketTypeManipulate, data, false)
}

// SendStateChange reports a stop and waits for its acknowledgement. The state change also becomes the
// pending one: re-sent after a RESET, or a RESEND with nothing else in flight, until ClearPending is called
// when the target resumes (kd-protocol.md §11.3).
func (s *TargetSession) SendStateChange(ctx context.Context, sc *StateChange) error {
	data, err := sc.MarshalBinary()
	if err != nil {
		return err
	}
	return s.send(ctx, PacketTypeStateChange64, data, true)
}

// ClearPending forgets the pending state change: the target is running again.
func (s *TargetSession) ClearPending(ctx context.Context) error {
	return s.do(ctx, func(ls *loopState) { ls.pendingSC = nil })
}

// Print sends a DbgPrint-style DEBUG_IO PrintString (the debugger only acknowledges it).
func (s *TargetSession) Print(ctx context.Context, processor uint16, text string) error {
	if len(text) > MaxPayload-DebugIOSize {
		return fmt.Errorf("print: %d bytes exceed %d", len(text), MaxPayload-DebugIOSize)
	}
	return s.SendBody(ctx, NewPrintString(processor, text))
}

// Resync forgets the debugger's packet ids, as on a fresh connection (e.g. after a new KDNET handshake, when
// a new debugger may start its ids over without sending RESET). Outgoing ids are kept.
func (s *TargetSession) Resync(ctx context.Context) error {
	return s.do(ctx, func(ls *loopState) {
		local := ls.ids.local
		ls.ids.restart(ls.s.cfg.FirstTargetID)
		if ls.ids.dialect == DialectKDNET {
			ls.ids.local = local
		}
	})
}
