package kdnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/kdstub/kdstub/kdproto"
)

// ErrClosed is returned by ReadPacket and WritePacket once the transport is closed.
var ErrClosed = errors.New("KDNET transport closed")

const (
	inboxDepth   = 64
	packetsDepth = 1024
	// readBufSize covers the largest datagram (a 4000-byte KD payload is ~4061 bytes) with room for junk.
	readBufSize = 65536
)

type inbound struct {
	b    []byte
	from netip.AddrPort
}

// rxItem is one delivery to ReadPacket: a packet, or a corrupt-packet report the session answers with RESEND.
type rxItem struct {
	p   *kdproto.Packet
	err error
}

type writeReq struct {
	p   *kdproto.Packet
	res chan error
}

// socket is the machinery both roles share: one goroutine (run, in the role) owns the connection's writes,
// the cipher state and every timer; a pump goroutine only reads datagrams and hands them to it. The split exists
// because a blocking ReadFrom cannot share a select with timers and write requests.
type socket struct {
	conn    net.PacketConn
	log     *slog.Logger
	keys    *Keys
	version uint8
	stats   counters

	in      chan inbound
	packets chan rxItem
	writes  chan writeReq
	done    chan struct{} // closed when run returns
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
	err     error // why run returned; read only after done is closed

	// The data channel, the same for both roles and owned by the run goroutine: the peer it is bound to by the
	// last handshake, the last seq sent, and the highest seq accepted (kd-protocol.md §7.5).
	bound   netip.AddrPort
	sendSeq uint64
	recvHW  uint64
	// fromHost is the direction bit of what this end sends on the data channel.
	fromHost bool
}

// handle routes one received datagram: a verified control datagram to the role's handler, a data datagram
// through the shared filters to ReadPacket.
func (s *socket) handle(in inbound, control func(from netip.AddrPort, d *Datagram)) {
	d, ok := s.open(in, !s.fromHost)
	if !ok {
		return
	}
	if d.Channel == ChannelControl {
		control(in.from, d)
		return
	}
	if s.acceptData(in.from, d.Seq) {
		s.deliver(d.Payload)
	}
}

// bindPeer points the data channel at the peer of a new handshake and restarts both sequence counters.
func (s *socket) bindPeer(peer netip.AddrPort) { s.bound, s.sendSeq, s.recvHW = peer, 0, 0 }

// acceptData applies the filters both roles share to a verified data datagram: it must come from the bound
// peer and advance the sequence high-water mark (retransmissions carry new seqs, so a replay is stale).
func (s *socket) acceptData(from netip.AddrPort, seq uint64) bool {
	if !s.bound.IsValid() || from != s.bound {
		s.stats.foreign.Add(1)
		s.log.Debug("KDNET data datagram from an unbound peer ignored", "from", from, "bound", s.bound)
		return false
	}
	if seq <= s.recvHW {
		s.stats.stale.Add(1)
		return false
	}
	s.recvHW = seq
	return true
}

// sendData sends one KD packet's bytes to the bound peer with the next data seq.
func (s *socket) sendData(payload []byte) error {
	s.sendSeq++
	return s.send(s.bound, &Datagram{Channel: ChannelData, Seq: s.sendSeq, FromHost: s.fromHost, Payload: payload})
}

func newSocket(conn net.PacketConn, k ControlKey, version uint8, lg *slog.Logger) (*socket, error) {
	if version == 0 {
		version = DefaultVersion
	}
	if !ValidVersion(version) {
		return nil, fmt.Errorf("KDNET version %d: %w", version, ErrVersion)
	}
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &socket{
		conn: conn, log: lg, keys: NewKeys(k), version: version,
		in:      make(chan inbound, inboxDepth),
		packets: make(chan rxItem, packetsDepth),
		writes:  make(chan writeReq),
		done:    make(chan struct{}),
	}, nil
}

// listen binds a UDP socket, or adopts the caller's connection (tests wrap one to inject loss).
func listen(ctx context.Context, conn net.PacketConn, local netip.AddrPort) (net.PacketConn, error) {
	if conn != nil {
		return conn, nil
	}
	var lc net.ListenConfig
	c, err := lc.ListenPacket(ctx, "udp", local.String())
	if err != nil {
		return nil, fmt.Errorf("bind KDNET UDP socket %s: %w", local, err)
	}
	return c, nil
}

// start launches the pump and the role's loop.
func (s *socket) start(ctx context.Context, run func(ctx context.Context) error) {
	ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.pump(ctx)
	}()
	go func() {
		defer s.wg.Done()
		err := run(ctx)
		if err == nil || errors.Is(err, context.Canceled) {
			err = ErrClosed
		}
		s.err = err
		close(s.done)
		s.conn.Close() // unblocks the pump
	}()
}

// pump reads datagrams and forwards copies to the owning goroutine; it never writes or touches state.
func (s *socket) pump(ctx context.Context) {
	buf := make([]byte, readBufSize)
	for {
		n, addr, err := s.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("KDNET socket read failed; transport stops", "err", err)
				s.cancel()
			}
			return
		}
		from := addrPortOf(addr)
		b := append([]byte(nil), buf[:n]...)
		select {
		case s.in <- inbound{b: b, from: from}:
		case <-ctx.Done():
			return
		}
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// send seals and writes one datagram.
func (s *socket) send(to netip.AddrPort, d *Datagram) error {
	d.Version = s.version
	b, err := s.keys.Seal(d)
	if err != nil {
		return err
	}
	if _, err := s.conn.WriteTo(b, net.UDPAddrFromAddrPort(to)); err != nil {
		return fmt.Errorf("send %d-byte KDNET %s datagram seq %d to %s: %w", len(b), d.Channel, d.Seq, to, err)
	}
	s.stats.sent.Add(1)
	return nil
}

// open verifies a datagram from the peer and counts a rejection.
func (s *socket) open(in inbound, fromHost bool) (*Datagram, bool) {
	s.stats.received.Add(1)
	d, err := s.keys.OpenFrom(in.b, fromHost)
	if err != nil {
		s.rejected(in.from, err)
		return nil, false
	}
	return d, true
}

func (s *socket) rejected(from netip.AddrPort, err error) {
	if s.stats.reject(err) {
		s.log.Error("KDNET datagram failed authentication: the peer most likely uses a different key; nothing from it will be accepted",
			"from", from, "err", err)
		return
	}
	s.log.Debug("KDNET datagram rejected", "from", from, "err", err)
}

// deliver hands a verified data payload to ReadPacket. It never blocks the owner: if the reader falls far
// behind, the packet is dropped and counted, exactly as a lost datagram would be; the KD session retransmits.
func (s *socket) deliver(payload []byte) {
	p, err := decodePacket(payload)
	item := rxItem{p: p}
	if err != nil {
		s.stats.badKD.Add(1)
		s.log.Warn("KDNET data datagram carries an undecodable KD packet", "err", err, "len", len(payload))
		if !errors.Is(err, kdproto.ErrCorruptPacket) {
			return
		}
		// A bad checksum behind a valid HMAC is a sender bug, but KD's answer is the same as on serial: RESEND.
		item = rxItem{err: err}
	} else {
		s.stats.accepted.Add(1)
	}
	select {
	case s.packets <- item:
	default:
		s.stats.overflow.Add(1)
		s.log.Warn("KDNET receive queue full; KD packet dropped")
	}
}

// ReadPacket returns the next KD packet from the peer (kdproto.Transport).
func (s *socket) ReadPacket(ctx context.Context) (*kdproto.Packet, error) {
	select {
	case it := <-s.packets:
		return it.p, it.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, s.err
	}
}

// submit hands a write to the owning goroutine and waits for its result.
func (s *socket) submit(ctx context.Context, p *kdproto.Packet) error {
	if p == nil {
		return errors.New("write KD packet: nil packet")
	}
	req := writeReq{p: p, res: make(chan error, 1)}
	select {
	case s.writes <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return s.err
	}
	select {
	case err := <-req.res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return s.err
	}
}

// Close stops the transport and releases the socket (kdproto.Transport). It is safe to call more than once.
func (s *socket) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

// Stats returns a snapshot of the transport's counters; safe from any goroutine.
func (s *socket) Stats() Stats { return s.stats.snapshot() }

// LocalAddr is the bound socket address (useful when binding port 0).
func (s *socket) LocalAddr() netip.AddrPort { return addrPortOf(s.conn.LocalAddr()) }

// readRandom fills b from r, wrapping a failure with context.
func readRandom(r io.Reader, b []byte) error {
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("read %d random bytes: %w", len(b), err)
	}
	return nil
}
