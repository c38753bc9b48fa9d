package kdnet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/kdstub/kdstub/kdproto"
)

// DefaultConnectInterval is how often a `target=` debugger repeats its connect request (~0.5 s per the docs).
const DefaultConnectInterval = 500 * time.Millisecond

// HostConfig configures the host (debugger) side of KDNET, the role WinDbg plays.
type HostConfig struct {
	Key ControlKey
	// Local is the address to listen on (WinDbg: 0.0.0.0:port).
	Local netip.AddrPort
	// Target selects `target=` mode: send a connect request there every ConnectInterval until a handshake
	// completes. Leave it zero to wait for pokes (classic mode).
	Target netip.AddrPort
	// ConnectInterval defaults to DefaultConnectInterval.
	ConnectInterval time.Duration
	// Version is used for connect requests; responses echo the poke's version. Default DefaultVersion.
	Version uint8
	Conn    net.PacketConn // as in TargetConfig
	Rand    io.Reader      // host randoms (default crypto/rand.Reader)
	Logger  *slog.Logger
	// OnConnect is called from the transport's goroutine after each handshake it answers. It must not block.
	OnConnect func(target netip.AddrPort)
}

// Host is the debugger side of KDNET: it answers pokes (all of them until connected, then only those of a target
// that says it is unbound, i.e. rebooted or reset) and carries KD packets. It implements kdproto.Transport;
// WritePacket waits until a target is bound.
type Host struct {
	*socket
	cfg HostConfig

	connected chan struct{} // closed at the first handshake
	ctrlSeq   uint64        // seq of our connect requests
	// answered is the last handshake response sent. A duplicated poke gets these same bytes again instead of
	// a fresh key, or the target (which accepts one answer per poke) and the host would disagree on the key.
	answered struct {
		to    netip.AddrPort
		seq   uint64
		nonce [NonceSize]byte
		wire  []byte
	}
}

// NewHost binds the socket and starts listening (and, in target= mode, sending connect requests).
func NewHost(ctx context.Context, cfg HostConfig) (*Host, error) {
	if cfg.ConnectInterval <= 0 {
		cfg.ConnectInterval = DefaultConnectInterval
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	conn, err := listen(ctx, cfg.Conn, cfg.Local)
	if err != nil {
		return nil, err
	}
	s, err := newSocket(conn, cfg.Key, cfg.Version, cfg.Logger)
	if err != nil {
		conn.Close()
		return nil, err
	}
	s.fromHost = true
	h := &Host{socket: s, cfg: cfg, connected: make(chan struct{})}
	s.start(ctx, h.run)
	return h, nil
}

// Connected is closed once the first handshake completes.
func (h *Host) Connected() <-chan struct{} { return h.connected }

// WritePacket sends one KD packet to the bound target, waiting for the first handshake if needed
// (kdproto.Transport).
func (h *Host) WritePacket(ctx context.Context, p *kdproto.Packet) error {
	select {
	case <-h.connected:
	case <-ctx.Done():
		return fmt.Errorf("write KD packet: waiting for a KDNET target: %w", ctx.Err())
	case <-h.done:
		return h.err
	}
	return h.submit(ctx, p)
}

func (h *Host) run(ctx context.Context) error {
	var tickC <-chan time.Time
	if h.cfg.Target.IsValid() {
		tick := time.NewTicker(h.cfg.ConnectInterval)
		defer tick.Stop()
		tickC = tick.C
		h.connectRequest()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tickC:
			if !h.bound.IsValid() {
				h.connectRequest()
			}
		case in := <-h.in:
			h.handle(in, h.control)
		case w := <-h.writes:
			w.res <- h.write(w.p)
		}
	}
}

// connectRequest is the `target=` special packet: an empty control datagram, to which the target answers
// with a poke.
func (h *Host) connectRequest() {
	h.ctrlSeq++
	if err := h.send(h.cfg.Target, &Datagram{Channel: ChannelControl, Seq: h.ctrlSeq, FromHost: true}); err != nil {
		h.log.Debug("KDNET connect request failed", "to", h.cfg.Target, "err", err)
	}
}

func (h *Host) control(from netip.AddrPort, d *Datagram) {
	var p Poke
	if err := p.UnmarshalBinary(d.Payload); err != nil {
		h.stats.reject(err)
		return
	}
	h.stats.accepted.Add(1)
	h.stats.pokes.Add(1)
	// A bound target keeps poking with its bound-host field set; those are keep-alives and get no answer. An
	// unbound poke from our own target means it restarted, so it is answered (rekey).
	if h.bound.IsValid() && p.Connected() {
		return
	}
	if h.cfg.Target.IsValid() && from.Addr() != h.cfg.Target.Addr() {
		h.log.Debug("KDNET poke from a target we did not ask for ignored", "from", from)
		return
	}
	if a := &h.answered; a.wire != nil && a.to == from && a.seq == d.Seq && a.nonce == p.Nonce {
		if _, err := h.conn.WriteTo(a.wire, net.UDPAddrFromAddrPort(from)); err == nil {
			h.stats.sent.Add(1)
		}
		return
	}
	if err := h.respond(from, d, p); err != nil {
		h.log.Warn("KDNET handshake failed", "target", from, "err", err)
	}
}

func (h *Host) respond(to netip.AddrPort, poke *Datagram, p Poke) error {
	r := Response{Nonce: p.Nonce}
	if err := readRandom(h.cfg.Rand, r.HostRandom[:]); err != nil {
		return err
	}
	body, _ := r.MarshalBinary()
	dk, err := DeriveDataKey(h.keys.Control, body)
	if err != nil {
		return err
	}
	b, err := h.keys.Seal(&Datagram{Version: poke.Version, Channel: ChannelControl, Seq: poke.Seq, FromHost: true, Payload: body})
	if err != nil {
		return err
	}
	if _, err := h.conn.WriteTo(b, net.UDPAddrFromAddrPort(to)); err != nil {
		return fmt.Errorf("send handshake response to %s: %w", to, err)
	}
	h.stats.sent.Add(1)
	h.answered.to, h.answered.seq, h.answered.nonce, h.answered.wire = to, poke.Seq, p.Nonce, b
	h.keys.SetDataKey(dk)
	h.bindPeer(to)
	h.version = poke.Version
	h.stats.handshakes.Add(1)
	h.log.Info("KDNET target connected", "target", to, "version", poke.Version)
	select {
	case <-h.connected:
	default:
		close(h.connected)
	}
	if h.cfg.OnConnect != nil {
		h.cfg.OnConnect(to)
	}
	return nil
}

func (h *Host) write(p *kdproto.Packet) error {
	b, err := p.MarshalBinary()
	if err != nil {
		return fmt.Errorf("encode KD packet for KDNET: %w", err)
	}
	if !h.bound.IsValid() {
		return errors.New("write KD packet: no KDNET target bound")
	}
	return h.sendData(b)
}

var _ kdproto.Transport = (*Host)(nil)
