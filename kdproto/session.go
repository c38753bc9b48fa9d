package kdproto

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Errors a session reports to its callers.
var (
	// ErrNoAck means a data packet was sent MaxTries times without an acknowledgement; the peer is taken as absent.
	ErrNoAck = errors.New("kdproto: no acknowledgement from peer")
	// ErrNoReset means the peer never answered a RESET.
	ErrNoReset = errors.New("kdproto: peer did not answer RESET")
	// ErrSessionClosed means the session's Run has returned.
	ErrSessionClosed = errors.New("kdproto: session closed")
)

// Config parameterises a session. The zero value of every field but Role and Dialect is a sensible default.
type Config struct {
	Role    Role
	Dialect Dialect
	// RetransmitInterval is how long an unacknowledged data packet (or a break-in, or a RESET) waits before it
	// is sent again. Default 1 s (kd-protocol.md §1.3: 1–2 s).
	RetransmitInterval time.Duration
	// MaxTries bounds transmissions of one data packet (and RESETs) before giving up. Default 10.
	MaxTries int
	// FirstTargetID is the target's first packet id on KDNET (0 on a fresh boot; any even value).
	FirstTargetID uint32
	// InboxSize is the capacity of each delivery channel. Default 32. A full channel leaves the packet
	// unacknowledged, so the peer retransmits it later.
	InboxSize int
	Logger    *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.RetransmitInterval <= 0 {
		c.RetransmitInterval = time.Second
	}
	if c.MaxTries <= 0 {
		c.MaxTries = 10
	}
	if c.InboxSize <= 0 {
		c.InboxSize = 32
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Session is the reliable KD packet layer over one Transport: ids, ACK wait, retransmission, RESEND and
// RESET, duplicate detection and delivery of typed bodies. TargetSession and HostSession add the role's
// operations on top.
//
// Concurrency: Run owns everything. It starts one goroutine that reads the transport and hands packets to
// the session loop; the loop alone mutates state, writes to the transport and runs the one timer of the
// session. Public methods talk to the loop through channels and are safe for concurrent use; they block
// (until their context ends) while Run is not running, so start Run first.
//
// Implicit acknowledgement: KD is strictly request/response, so a new (non-duplicate) data packet from the
// peer while one of ours waits for its ACK proves the peer received ours (ReactOS kddll treats its packet as
// delivered in the same situation). The session then completes the pending packet without waiting for a lost
// ACK, which keeps a lossy link from stalling for a retransmit interval.
type Session struct {
	t   Transport
	cfg Config
	log *slog.Logger
	m   counters

	cmds     chan func(*loopState)
	rx       chan rxEvent
	manips   chan *Manipulate
	states   chan *StateChange
	io       chan *Packet
	breakins chan struct{}

	runOnce sync.Once
	done    chan struct{}
	err     error // set before done is closed
}

type rxEvent struct {
	p   *Packet
	err error
}

// outgoing is one data packet waiting to be sent or acknowledged.
type outgoing struct {
	typ         uint16
	data        []byte
	done        chan error // buffered(1); nil for internal re-sends
	finished    bool
	stateChange bool
	pkt         *Packet // built when first sent; rebuilt when a RESET changes the id
	tries       int
	sentAt      time.Time
}

// loopState is owned by the session loop goroutine.
type loopState struct {
	s     *Session
	ctx   context.Context
	ids   idState
	queue []*outgoing
	timer *time.Timer

	pendingSC []byte // target: the state change to re-send after RESET/RESEND while stopped

	breakinActive bool // host: keep sending 0x62 until a state change arrives
	breakinAt     time.Time

	resetWaiter chan error // host: a Reset call waiting for the peer's RESET
	resetTries  int
	resetAt     time.Time

	fatal error
}

func newSession(t Transport, cfg Config) *Session {
	cfg = cfg.withDefaults()
	return &Session{
		t: t, cfg: cfg,
		log:      cfg.Logger.With("kd_role", cfg.Role.String(), "kd_dialect", cfg.Dialect.String()),
		cmds:     make(chan func(*loopState)),
		rx:       make(chan rxEvent, 128),
		manips:   make(chan *Manipulate, cfg.InboxSize),
		states:   make(chan *StateChange, cfg.InboxSize),
		io:       make(chan *Packet, cfg.InboxSize),
		breakins: make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// Metrics returns a snapshot of the session's counters.
func (s *Session) Metrics() Metrics { return s.m.snapshot() }

// Done is closed when Run has returned; Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why Run ended (nil while it runs).
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// IO delivers incoming DEBUG_IO, FILE_IO, TRACE_IO and CONTROL_REQUEST packets (decode them with Body).
func (s *Session) IO() <-chan *Packet { return s.io }

// Run drives the session until ctx ends or the transport fails; it may be called once. It does not close the
// transport.
func (s *Session) Run(ctx context.Context) error {
	err := ErrSessionClosed
	s.runOnce.Do(func() { err = s.run(ctx) })
	return err
}

func (s *Session) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.readLoop(ctx)
	}()
	ls := &loopState{s: s, ctx: ctx, ids: newIDState(s.cfg.Dialect, s.cfg.Role, s.cfg.FirstTargetID),
		timer: time.NewTimer(time.Hour)}
	ls.timer.Stop()
	err := ls.loop()
	cancel()
	wg.Wait()
	ls.timer.Stop()
	for _, o := range ls.queue {
		o.finish(err)
	}
	if ls.resetWaiter != nil {
		ls.resetWaiter <- err
	}
	s.err = err
	close(s.done)
	return err
}

// readLoop is the one goroutine that reads the transport. Corrupt-packet reports are passed on (the loop
// answers RESEND); packets are dropped when the loop is far behind (the peer retransmits); a fatal error is
// always delivered, then the goroutine ends.
func (s *Session) readLoop(ctx context.Context) {
	for {
		p, err := s.t.ReadPacket(ctx)
		if err != nil && ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, ErrCorruptPacket) {
			select {
			case s.rx <- rxEvent{nil, err}:
			case <-ctx.Done():
			}
			return
		}
		select {
		case s.rx <- rxEvent{p, err}:
		default:
			s.m.dropped.Add(1)
		}
	}
}

func (ls *loopState) loop() error {
	for ls.fatal == nil {
		select {
		case <-ls.ctx.Done():
			return ls.ctx.Err()
		case ev := <-ls.s.rx:
			if ev.err != nil {
				ls.onReadError(ev.err)
				continue
			}
			ls.onPacket(ev.p)
		case f := <-ls.s.cmds:
			f(ls)
		case <-ls.timer.C:
			ls.onTimer()
		}
	}
	return ls.fatal
}

// do runs f on the loop goroutine.
func (s *Session) do(ctx context.Context, f func(*loopState)) error {
	select {
	case s.cmds <- f:
		return nil
	case <-s.done:
		return fmt.Errorf("%w: %w", ErrSessionClosed, s.err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send queues a data packet and waits for its acknowledgement.
func (s *Session) send(ctx context.Context, typ uint16, data []byte, stateChange bool) error {
	if len(data) > MaxPayload {
		return fmt.Errorf("send %s: payload %d bytes exceeds %d", PacketTypeName(typ), len(data), MaxPayload)
	}
	done := make(chan error, 1)
	o := &outgoing{typ: typ, data: data, done: done, stateChange: stateChange}
	if err := s.do(ctx, func(ls *loopState) { ls.enqueue(o) }); err != nil {
		return fmt.Errorf("send %s: %w", PacketTypeName(typ), err)
	}
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("send %s: %w", PacketTypeName(typ), err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("send %s: %w", PacketTypeName(typ), ctx.Err())
	}
}

// SendBody encodes a typed body (*Manipulate, *StateChange, *DebugIO, …), sends it reliably and waits for the
// peer's acknowledgement.
func (s *Session) SendBody(ctx context.Context, body any) error {
	typ, err := BodyPacketType(body)
	if err != nil {
		return err
	}
	data, err := EncodeBody(body)
	if err != nil {
		return err
	}
	return s.send(ctx, typ, data, false)
}

func (o *outgoing) finish(err error) {
	if o.done != nil && !o.finished {
		o.done <- err
	}
	o.finished = true
}

func (ls *loopState) enqueue(o *outgoing) {
	if o.stateChange {
		ls.pendingSC = o.data
	}
	ls.queue = append(ls.queue, o)
	if len(ls.queue) == 1 {
		ls.transmitHead(false)
	}
}

// transmitHead (re)sends the packet at the head of the queue with the current local id.
func (ls *loopState) transmitHead(retransmit bool) {
	if len(ls.queue) == 0 {
		return
	}
	o := ls.queue[0]
	if o.pkt == nil || o.pkt.ID != ls.ids.local {
		o.pkt = NewDataPacket(o.typ, ls.ids.local, o.data)
	}
	if o.tries >= ls.s.cfg.MaxTries {
		ls.s.m.gaveUp.Add(1)
		ls.s.log.Warn("kd: giving up on unacknowledged packet", "packet", o.pkt.String(), "tries", o.tries)
		ls.queue = ls.queue[1:]
		o.finish(fmt.Errorf("%w: %s after %d tries", ErrNoAck, o.pkt, o.tries))
		ls.transmitHead(false)
		return
	}
	o.tries++
	o.sentAt = time.Now()
	if retransmit || o.tries > 1 {
		ls.s.m.retransmits.Add(1)
	} else {
		ls.s.m.sent.Add(1)
	}
	ls.write(o.pkt)
	ls.rearm()
}

// completeHead finishes the head packet as delivered and starts the next one.
func (ls *loopState) completeHead(implicit bool) {
	o := ls.queue[0]
	ls.queue = ls.queue[1:]
	ls.ids.advance()
	if implicit {
		ls.s.m.implicitAcks.Add(1)
	} else {
		ls.s.m.acked.Add(1)
	}
	o.finish(nil)
	ls.transmitHead(false)
	ls.rearm()
}

func (ls *loopState) write(p *Packet) {
	if ls.fatal != nil {
		return
	}
	ls.s.log.Debug("kd: send", "packet", p.String())
	if err := ls.s.t.WritePacket(ls.ctx, p); err != nil {
		ls.fatal = fmt.Errorf("write %s: %w", p, err)
	}
}

func (ls *loopState) sendControl(typ uint16, id uint32) {
	switch typ {
	case PacketTypeResend:
		ls.s.m.resendsSent.Add(1)
	case PacketTypeReset:
		ls.s.m.resetsSent.Add(1)
	}
	ls.write(NewControlPacket(typ, id))
}

func (ls *loopState) onReadError(err error) {
	if errors.Is(err, ErrCorruptPacket) {
		ls.s.m.badPackets.Add(1)
		ls.s.log.Debug("kd: corrupt packet, asking for resend", "err", err)
		ls.sendControl(PacketTypeResend, 0)
		return
	}
	ls.fatal = fmt.Errorf("read packet: %w", err)
}

func (ls *loopState) onPacket(p *Packet) {
	ls.s.log.Debug("kd: recv", "packet", p.String())
	switch {
	case p.IsBreakin():
		if ls.s.cfg.Role == RoleTarget {
			ls.s.m.breakIns.Add(1)
			select {
			case ls.s.breakins <- struct{}{}:
			default: // one pending break-in is enough; WinDbg sends several
			}
		}
	case p.IsConnCheck():
		// WinDbg answers the KDNET connection check with RESEND(0) so the target re-sends what it has pending.
		if ls.s.cfg.Role == RoleHost {
			ls.sendControl(PacketTypeResend, 0)
		}
	case p.IsControl():
		ls.onControl(p)
	case p.IsData():
		ls.onData(p)
	}
}

func (ls *loopState) onControl(p *Packet) {
	switch p.Type {
	case PacketTypeAcknowledge:
		if len(ls.queue) > 0 && ls.queue[0].pkt != nil && ls.ids.ackMatches(p.ID) {
			ls.completeHead(false)
			return
		}
		ls.s.m.strayAcks.Add(1)
	case PacketTypeResend:
		ls.s.m.resendsReceived.Add(1)
		if len(ls.queue) > 0 {
			ls.transmitHead(true)
			return
		}
		if ls.s.cfg.Role == RoleTarget && ls.pendingSC != nil {
			ls.enqueue(&outgoing{typ: PacketTypeStateChange64, data: ls.pendingSC})
		}
	case PacketTypeReset:
		ls.s.m.resetsReceived.Add(1)
		if ls.s.cfg.Role == RoleTarget {
			ls.targetReset(p.ID)
		} else {
			ls.hostResetReply(p.ID)
		}
	}
}

// targetReset resynchronises after the debugger's RESET and re-sends what is pending (kd-protocol.md §1.2, §7.6).
func (ls *loopState) targetReset(hostNextID uint32) {
	if ls.ids.dialect == DialectKDCOM {
		ls.ids.restart(0) // local = INITIAL|SYNC, expected = INITIAL
		ls.sendControl(PacketTypeReset, 0)
	} else {
		ls.ids.hasLast = false
		ls.ids.remote = hostNextID
		ls.sendControl(PacketTypeReset, ls.ids.local)
	}
	if len(ls.queue) > 0 {
		ls.queue[0].tries = 0
		ls.transmitHead(true)
		return
	}
	if ls.pendingSC != nil {
		ls.enqueue(&outgoing{typ: PacketTypeStateChange64, data: ls.pendingSC})
	}
}

// hostResetReply handles the target's RESET: the answer to ours, or the target restarting its stream.
func (ls *loopState) hostResetReply(targetID uint32) {
	if ls.ids.dialect == DialectKDCOM {
		ls.ids.restart(0)
	} else {
		ls.ids.hasLast = false
		ls.ids.remote = targetID
	}
	if ls.resetWaiter != nil {
		ls.resetWaiter <- nil
		ls.resetWaiter = nil
	}
	if len(ls.queue) > 0 {
		ls.queue[0].tries = 0
		ls.transmitHead(true)
	}
	ls.rearm()
}

func (ls *loopState) onData(p *Packet) {
	if ls.ids.isDuplicate(p.ID) {
		ls.s.m.duplicates.Add(1)
		ls.sendControl(PacketTypeAcknowledge, p.ID)
		return
	}
	if !ls.deliver(p) {
		ls.s.m.dropped.Add(1) // left unacknowledged: the peer will send it again
		return
	}
	ls.sendControl(PacketTypeAcknowledge, p.ID)
	ls.ids.accept(p.ID)
	if len(ls.queue) > 0 && ls.queue[0].pkt != nil {
		ls.completeHead(true)
	}
}

// deliver decodes p and hands it to the consumer; false means the consumer's queue is full.
func (ls *loopState) deliver(p *Packet) bool {
	body, err := p.Body()
	if err != nil {
		// Well framed but undecodable: acknowledge it so it is not retransmitted forever, but drop it.
		ls.s.m.badBodies.Add(1)
		ls.s.log.Warn("kd: undecodable packet body", "packet", p.String(), "err", err)
		return true
	}
	var ok bool
	switch b := body.(type) {
	case *Manipulate:
		ok = trySend(ls.s.manips, b)
		if ok && ls.s.cfg.Role == RoleTarget && resumes(b.APINumber) {
			// The debugger has left the stop behind: a RESET from a debugger that connects before the server has
			// acted on the continue must not be answered with the stale state change.
			ls.pendingSC = nil
		}
	case *StateChange:
		ok = trySend(ls.s.states, b)
		if ok {
			ls.breakinActive = false
			ls.rearm()
		}
	default:
		ok = trySend(ls.s.io, p)
	}
	if ok {
		ls.s.m.received.Add(1)
	}
	return ok
}

// resumes reports whether api makes the target leave the debugger (kd-protocol.md §2.2).
func resumes(api uint32) bool { return api == APIContinue || api == APIContinue2 }

func trySend[T any](ch chan T, v T) bool {
	select {
	case ch <- v:
		return true
	default:
		return false
	}
}

// onTimer runs every periodic action that is due and re-arms the single session timer.
func (ls *loopState) onTimer() {
	now := time.Now()
	iv := ls.s.cfg.RetransmitInterval
	if len(ls.queue) > 0 && ls.queue[0].pkt != nil && now.Sub(ls.queue[0].sentAt) >= iv {
		ls.transmitHead(true)
	}
	if ls.breakinActive && now.Sub(ls.breakinAt) >= iv {
		ls.sendBreakin()
	}
	if ls.resetWaiter != nil && now.Sub(ls.resetAt) >= iv {
		ls.sendReset()
	}
	ls.rearm()
}

// rearm points the timer at the earliest pending deadline, or stops it.
func (ls *loopState) rearm() {
	var next time.Time
	consider := func(active bool, at time.Time) {
		if !active {
			return
		}
		d := at.Add(ls.s.cfg.RetransmitInterval)
		if next.IsZero() || d.Before(next) {
			next = d
		}
	}
	if len(ls.queue) > 0 && ls.queue[0].pkt != nil {
		consider(true, ls.queue[0].sentAt)
	}
	consider(ls.breakinActive, ls.breakinAt)
	consider(ls.resetWaiter != nil, ls.resetAt)
	if next.IsZero() {
		ls.timer.Stop()
		return
	}
	ls.timer.Reset(max(time.Until(next), time.Millisecond))
}

func (ls *loopState) sendBreakin() {
	ls.breakinAt = time.Now()
	ls.s.m.breakIns.Add(1)
	ls.write(NewBreakinPacket())
}

func (ls *loopState) sendReset() {
	if ls.resetTries >= ls.s.cfg.MaxTries {
		ls.resetWaiter <- fmt.Errorf("%w after %d tries", ErrNoReset, ls.resetTries)
		ls.resetWaiter = nil
		return
	}
	ls.resetTries++
	ls.resetAt = time.Now()
	id := uint32(0) // KDCOM debuggers send RESET with id 0
	if ls.ids.dialect == DialectKDNET {
		id = ls.ids.local // KDNET: RESET carries the host's next id
	}
	ls.sendControl(PacketTypeReset, id)
}
