package kdnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/kdstub/kdstub/kdproto"
)

// DefaultPokeInterval is how often kdnet.dll offers itself (3.017 s measured); it keeps poking in every state.
const DefaultPokeInterval = 3 * time.Second

// TargetConfig configures the target (debuggee) side of KDNET.
type TargetConfig struct {
	Key ControlKey
	// Version is the KDNET version byte of the pokes (default DefaultVersion); a host echoes it.
	Version uint8
	// Local is the address to bind and send from. In classic mode bind the same port as Host's, because WinDbg
	// replies to the source address and some clients insist on equal ports.
	Local netip.AddrPort
	// Host is the debugger to poke (bcdedit hostip:port). Leave it zero for `target=` mode, where the target only
	// listens on Local and pokes whichever debugger sends it a connect request.
	Host netip.AddrPort
	// PokeInterval defaults to DefaultPokeInterval.
	PokeInterval time.Duration
	// Conn, when set, is used instead of binding Local (tests wrap a socket to inject loss). The transport owns it.
	Conn net.PacketConn
	// Rand supplies poke nonces (default crypto/rand.Reader).
	Rand   io.Reader
	Logger *slog.Logger
	// OnConnect, when set, is called from the transport's goroutine each time a handshake binds a debugger (a new
	// data key: the KD stream restarts). It must not block.
	OnConnect func(host netip.AddrPort)
}

// Target is the debuggee side of KDNET: it pokes, accepts handshakes, and carries KD packets on the data channel.
// It implements kdproto.Transport. Writes made while no debugger is bound are dropped (counted in Stats.Dropped):
// after the next handshake the conncheck packet makes the debugger ask for a RESEND, which recovers them.
type Target struct {
	*socket
	cfg TargetConfig

	pokeTo    netip.AddrPort // where periodic pokes go: cfg.Host, or the last host that asked (target= mode)
	pokeSeq   uint64
	pokeCount uint16
	nonceBase [NonceSize]byte
	// lastPoke is the only poke a response may answer. Accepting answers to older pokes could leave the two
	// sides on different data keys: a host answers every unbound poke with a fresh key, so only the answer to
	// the newest poke is the one the host will use.
	lastPoke sentPoke
	accepted []byte         // the response body of the current handshake, to recognise duplicates
	selfFor  netip.AddrPort // cache key for self
	self     netip.AddrPort // our address as seen toward selfFor
}

type sentPoke struct {
	seq   uint64
	nonce [NonceSize]byte
	valid bool
}

// NewTarget binds the socket and starts poking. Close releases it.
func NewTarget(ctx context.Context, cfg TargetConfig) (*Target, error) {
	if cfg.PokeInterval <= 0 {
		cfg.PokeInterval = DefaultPokeInterval
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	t := &Target{cfg: cfg, pokeTo: cfg.Host}
	if err := readRandom(cfg.Rand, t.nonceBase[:]); err != nil {
		return nil, fmt.Errorf("KDNET target nonce: %w", err)
	}
	t.pokeCount = binary.LittleEndian.Uint16(t.nonceBase[:])
	conn, err := listen(ctx, cfg.Conn, cfg.Local)
	if err != nil {
		return nil, err
	}
	s, err := newSocket(conn, cfg.Key, cfg.Version, cfg.Logger)
	if err != nil {
		conn.Close()
		return nil, err
	}
	t.socket = s
	s.start(ctx, t.run)
	return t, nil
}

// WritePacket sends one KD packet to the bound debugger (kdproto.Transport).
func (t *Target) WritePacket(ctx context.Context, p *kdproto.Packet) error { return t.submit(ctx, p) }

// run is the owning goroutine: all state above is touched only here, and the poke ticker is the only timer.
func (t *Target) run(ctx context.Context) error {
	tick := time.NewTicker(t.cfg.PokeInterval)
	defer tick.Stop()
	t.poke(t.pokeTo)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			t.poke(t.pokeTo)
		case in := <-t.in:
			t.handle(in, t.control)
		case w := <-t.writes:
			w.res <- t.write(w.p)
		}
	}
}

func (t *Target) poke(to netip.AddrPort) {
	if !to.IsValid() {
		return
	}
	t.pokeSeq++
	t.pokeCount++
	nonce := t.nonceBase
	binary.LittleEndian.PutUint16(nonce[:], t.pokeCount)
	p := Poke{Nonce: nonce, Target: t.selfAddr(to), Host: t.cfg.Host, Bound: t.bound}
	if !p.Host.IsValid() {
		p.Host = to
	}
	body, _ := p.MarshalBinary()
	if err := t.send(to, &Datagram{Channel: ChannelControl, Seq: t.pokeSeq, Payload: body}); err != nil {
		t.log.Warn("KDNET poke failed", "to", to, "err", err)
		return
	}
	t.lastPoke = sentPoke{seq: t.pokeSeq, nonce: nonce, valid: true}
	t.stats.pokes.Add(1)
}

// selfAddr is the target address written into pokes: the bound local address, or, when bound to a wildcard,
// the local address the kernel would use to reach the host.
func (t *Target) selfAddr(to netip.AddrPort) netip.AddrPort {
	if to == t.selfFor && t.self.IsValid() {
		return t.self
	}
	self := t.LocalAddr()
	if !self.Addr().IsValid() || self.Addr().IsUnspecified() {
		// Connecting a UDP socket sends nothing; it only asks the kernel for the route's source address.
		if c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to)); err == nil {
			self = netip.AddrPortFrom(addrPortOf(c.LocalAddr()).Addr(), self.Port())
			c.Close()
		}
	}
	t.selfFor, t.self = to, self
	return self
}

// control handles a verified host control datagram: a response to one of our pokes completes a handshake;
// anything else is a debugger asking to connect (`target=` mode), answered with an immediate poke.
func (t *Target) control(from netip.AddrPort, d *Datagram) {
	t.stats.accepted.Add(1)
	if BodyKind(d.Payload) != "response" {
		if !t.cfg.Host.IsValid() {
			t.pokeTo = from
		}
		t.log.Debug("KDNET connect request; poking", "from", from)
		t.poke(from)
		return
	}
	var r Response
	if err := r.UnmarshalBinary(d.Payload); err != nil {
		t.stats.reject(err)
		return
	}
	if !t.lastPoke.valid || t.lastPoke.seq != d.Seq || t.lastPoke.nonce != r.Nonce {
		if bytes.Equal(d.Payload, t.accepted) {
			t.stats.stale.Add(1) // a duplicated response of the current handshake
			return
		}
		t.stats.reject(errors.New("handshake response does not answer our latest poke"))
		t.log.Debug("KDNET handshake response to an old or unknown poke ignored", "from", from, "seq", d.Seq)
		return
	}
	dk, err := DeriveDataKey(t.keys.Control, d.Payload)
	if err != nil {
		t.stats.reject(err)
		return
	}
	t.keys.SetDataKey(dk)
	t.bindPeer(from)
	t.lastPoke.valid = false // a nonce completes at most one handshake
	t.accepted = append(t.accepted[:0], d.Payload...)
	if !t.cfg.Host.IsValid() {
		t.pokeTo = from
	}
	t.stats.handshakes.Add(1)
	t.log.Info("KDNET debugger connected", "host", from, "version", d.Version)
	t.conncheck()
	if t.cfg.OnConnect != nil {
		t.cfg.OnConnect(from)
	}
}

// conncheck sends the 12-byte UNUSED pseudo-packet that opens the data channel (§7.6); its id is the host's
// IPv4 address read as a little-endian u32 of the dotted bytes.
func (t *Target) conncheck() {
	var id uint32
	if a := t.bound.Addr(); a.Is4() {
		b := a.As4()
		id = binary.BigEndian.Uint32(b[:])
	}
	b, err := kdproto.NewConnCheckPacket(id).MarshalBinary()
	if err != nil {
		t.log.Warn("KDNET conncheck encoding failed", "err", err)
		return
	}
	if err := t.sendData(b); err != nil {
		t.log.Warn("KDNET conncheck failed", "err", err)
	}
}

func (t *Target) write(p *kdproto.Packet) error {
	b, err := p.MarshalBinary()
	if err != nil {
		return fmt.Errorf("encode KD packet for KDNET: %w", err)
	}
	if !t.bound.IsValid() {
		t.stats.dropped.Add(1)
		return nil
	}
	return t.sendData(b)
}

var _ kdproto.Transport = (*Target)(nil)
