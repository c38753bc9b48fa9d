package kdnet

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

// seededRand is a deterministic random source for nonces and host randoms.
type seededRand struct{ r *rand.Rand }

func newSeededRand(seed uint64) *seededRand { return &seededRand{rand.New(rand.NewPCG(seed, 1))} }

func (s *seededRand) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(s.r.Uint32())
	}
	return len(b), nil
}

func udpConn(t *testing.T) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	return c
}

type pair struct {
	host   *Host
	target *Target
}

func newClassicPair(t *testing.T, ctx context.Context, hostKey, targetKey string, hostConn, targetConn net.PacketConn) pair {
	t.Helper()
	hk, err := ParseKey(hostKey)
	require.NoError(t, err)
	tk, err := ParseKey(targetKey)
	require.NoError(t, err)
	h, err := NewHost(ctx, HostConfig{Key: hk, Local: loopback, Conn: hostConn, Rand: newSeededRand(2)})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	tg, err := NewTarget(ctx, TargetConfig{Key: tk, Local: loopback, Host: h.LocalAddr(), Conn: targetConn,
		PokeInterval: 100 * time.Millisecond, Rand: newSeededRand(1)})
	require.NoError(t, err)
	t.Cleanup(func() { tg.Close() })
	return pair{h, tg}
}

func readWithin(t *testing.T, tr kdproto.Transport, d time.Duration) *kdproto.Packet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	p, err := tr.ReadPacket(ctx)
	require.NoError(t, err)
	return p
}

func TestTransportClassicHandshakeAndData(t *testing.T) {
	ctx := context.Background()
	p := newClassicPair(t, ctx, "kdstub.windbg.qemu.3w5e11264sgsf", "kdstub.windbg.qemu.3w5e11264sgsf", nil, nil)

	// The first thing the host sees on the data channel is the conncheck carrying its IPv4 address.
	cc := readWithin(t, p.host, 2*time.Second)
	require.True(t, cc.IsConnCheck(), "got %v", cc)
	require.Equal(t, uint32(0x7f000001), cc.ID)

	// Data both ways, break-in included.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	require.NoError(t, p.host.WritePacket(wctx, kdproto.NewBreakinPacket()))
	require.True(t, readWithin(t, p.target, 2*time.Second).IsBreakin())
	sc := kdproto.NewDataPacket(kdproto.PacketTypeStateChange64, 0, make([]byte, 0xF0))
	require.NoError(t, p.target.WritePacket(wctx, sc))
	got := readWithin(t, p.host, 2*time.Second)
	require.Equal(t, sc, got)
	ack := kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0)
	require.NoError(t, p.host.WritePacket(wctx, ack))
	require.Equal(t, ack, readWithin(t, p.target, 2*time.Second))

	// A data packet whose KD checksum is wrong (behind a valid HMAC) surfaces as a corrupt-packet report, which
	// the session answers with RESEND.
	bad := kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 0x80000000, make([]byte, 56))
	bad.Checksum++
	require.NoError(t, p.host.WritePacket(wctx, bad))
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	_, err := p.target.ReadPacket(rctx)
	require.ErrorIs(t, err, kdproto.ErrCorruptPacket)
	require.Equal(t, uint64(1), p.target.Stats().BadKD)

	// Keep-alive pokes keep coming (bound-host field set) and are not answered: still one handshake each side.
	require.Eventually(t, func() bool { return p.host.Stats().Pokes >= 4 }, 3*time.Second, 20*time.Millisecond)
	require.Equal(t, uint64(1), p.host.Stats().Handshakes)
	require.Equal(t, uint64(1), p.target.Stats().Handshakes)
	require.Zero(t, p.target.Stats().Rejected)
	require.Zero(t, p.host.Stats().Rejected)
}

func TestTransportTargetModeHandshake(t *testing.T) {
	ctx := context.Background()
	k, err := ParseKey("8.8.8.8")
	require.NoError(t, err)
	tg, err := NewTarget(ctx, TargetConfig{Key: k, Local: loopback, PokeInterval: time.Hour})
	require.NoError(t, err)
	defer tg.Close()
	h, err := NewHost(ctx, HostConfig{Key: k, Local: loopback, Target: tg.LocalAddr(), ConnectInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	defer h.Close()
	// With an hour-long poke interval, only the connect request can make the target poke.
	cc := readWithin(t, h, 3*time.Second)
	require.True(t, cc.IsConnCheck())
	require.Equal(t, uint64(1), tg.Stats().Handshakes)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	require.NoError(t, tg.WritePacket(wctx, kdproto.NewControlPacket(kdproto.PacketTypeReset, 0)))
	require.Equal(t, kdproto.PacketTypeReset, readWithin(t, h, 2*time.Second).Type)
}

func TestTransportWrongKey(t *testing.T) {
	ctx := context.Background()
	p := newClassicPair(t, ctx, "1.2.3.4", "1.2.3.5", nil, nil)
	require.Eventually(t, func() bool { return p.host.Stats().RejectedTag >= 3 }, 3*time.Second, 20*time.Millisecond)
	hs, ts := p.host.Stats(), p.target.Stats()
	require.Zero(t, hs.Accepted)
	require.Zero(t, hs.Handshakes)
	require.Zero(t, ts.Handshakes)
	require.Equal(t, hs.Received, hs.Rejected)
	require.Contains(t, hs.LastRejected, "HMAC")
	// Nothing reached the KD layer on either side, and the host cannot send.
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err := p.host.ReadPacket(wctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Error(t, p.host.WritePacket(wctx, kdproto.NewBreakinPacket()))
	// The target drops writes while unbound rather than blocking.
	require.NoError(t, p.target.WritePacket(ctx, kdproto.NewControlPacket(kdproto.PacketTypeReset, 0)))
	require.Equal(t, uint64(1), p.target.Stats().Dropped)
}

func TestTransportIgnoresReplayedData(t *testing.T) {
	ctx := context.Background()
	tap := &tapConn{PacketConn: udpConn(t)}
	p := newClassicPair(t, ctx, "a.b.c.d", "a.b.c.d", tap, nil)
	readWithin(t, p.host, 2*time.Second) // conncheck
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ack := kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0x80000000)
	require.NoError(t, p.host.WritePacket(wctx, ack))
	readWithin(t, p.target, 2*time.Second)
	// Replay the last host datagram (the ACK) from the host's own socket: same seq, so it must be ignored.
	sent := tap.written()
	last := sent[len(sent)-1]
	_, err := tap.PacketConn.WriteTo(last, net.UDPAddrFromAddrPort(p.target.LocalAddr()))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.target.Stats().Stale == 1 }, 2*time.Second, 10*time.Millisecond)
	rctx, rcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer rcancel()
	_, err = p.target.ReadPacket(rctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	// The same bytes sent from another socket are foreign (not the bound host) even before the seq check.
	other := udpConn(t)
	defer other.Close()
	_, err = other.WriteTo(last, net.UDPAddrFromAddrPort(p.target.LocalAddr()))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.target.Stats().Foreign == 1 }, 2*time.Second, 10*time.Millisecond)
}

func TestTransportRehandshakeWithNewHost(t *testing.T) {
	ctx := context.Background()
	k, err := ParseKey("3.3.3.3")
	require.NoError(t, err)
	h1, err := NewHost(ctx, HostConfig{Key: k, Local: loopback, Rand: newSeededRand(10)})
	require.NoError(t, err)
	hostAddr := h1.LocalAddr()
	var connects []netip.AddrPort
	connected := make(chan netip.AddrPort, 4)
	tg, err := NewTarget(ctx, TargetConfig{Key: k, Local: loopback, Host: hostAddr, PokeInterval: 50 * time.Millisecond,
		OnConnect: func(h netip.AddrPort) { connected <- h }})
	require.NoError(t, err)
	defer tg.Close()
	require.True(t, readWithin(t, h1, 2*time.Second).IsConnCheck())
	connects = append(connects, <-connected)
	h1.Close()

	// A new debugger on the same address answers the next keep-alive poke anyway: the target must take the new key.
	h2, err := NewHost(ctx, HostConfig{Key: k, Local: hostAddr, Rand: newSeededRand(11)})
	require.NoError(t, err)
	defer h2.Close()
	require.True(t, readWithin(t, h2, 3*time.Second).IsConnCheck())
	connects = append(connects, <-connected)
	require.Equal(t, []netip.AddrPort{hostAddr, hostAddr}, connects)
	require.Equal(t, uint64(2), tg.Stats().Handshakes)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	require.NoError(t, h2.WritePacket(wctx, kdproto.NewBreakinPacket()))
	require.True(t, readWithin(t, tg, 2*time.Second).IsBreakin())
}

func TestTransportCloseUnblocksReaders(t *testing.T) {
	k, err := ParseKey("1.1.1.1")
	require.NoError(t, err)
	h, err := NewHost(context.Background(), HostConfig{Key: k, Local: loopback})
	require.NoError(t, err)
	errc := make(chan error, 2)
	go func() { _, err := h.ReadPacket(context.Background()); errc <- err }()
	go func() { errc <- h.WritePacket(context.Background(), kdproto.NewBreakinPacket()) }()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, h.Close())
	require.NoError(t, h.Close())
	require.ErrorIs(t, <-errc, ErrClosed)
	require.ErrorIs(t, <-errc, ErrClosed)
}
