package kdnet

import (
	"context"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdtest"
)

const sessionMemBase = 0xfffff80412200000

func sessionMemory() []byte {
	r := rand.New(rand.NewPCG(7, 8))
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// runSessions runs kdproto's host and target sessions (KDNET dialect) and a memory-backed target over the two
// transports until the test ends.
func runSessions(t *testing.T, ctx context.Context, host, target kdproto.Transport) (*kdproto.HostSession, *kdtest.MemTarget) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	cfg := kdproto.Config{Dialect: kdproto.DialectKDNET, RetransmitInterval: 100 * time.Millisecond, MaxTries: 50}
	hs, ts := kdproto.NewHost(host, cfg), kdproto.NewTarget(target, cfg)
	mt := &kdtest.MemTarget{Mem: sessionMemory(), Base: sessionMemBase}
	done := make(chan struct{}, 3)
	go func() { _ = hs.Run(ctx); done <- struct{}{} }()
	go func() { _ = ts.Run(ctx); done <- struct{}{} }()
	go func() { _ = mt.Serve(ctx, ts); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		for range 3 {
			<-done
		}
	})
	return hs, mt
}

// TestSessionOverKDNET is the whole KD conversation over real loopback UDP with KDNET framing and crypto:
// handshake, RESET, break-in and state change, GetVersion, 1000 verified reads, Continue2, a second break-in,
// an unsupported API, Continue.
func TestSessionOverKDNET(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p := newClassicPair(t, ctx, "kdstub.session.test.1", "kdstub.session.test.1", nil, nil)
	hs, mt := runSessions(t, ctx, p.host, p.target)
	require.NoError(t, kdtest.Scenario(ctx, hs, mt.Mem, sessionMemBase, 1000, 3))
	require.Equal(t, int64(2), mt.Stops.Load())
	require.Equal(t, uint64(1), p.target.Stats().Handshakes)
	require.Zero(t, p.target.Stats().Rejected)
	require.Zero(t, p.host.Stats().Rejected)
	require.Zero(t, p.target.Stats().Stale+p.host.Stats().Stale, "nothing is replayed on a loss-free link")
	require.Zero(t, hs.Metrics().GaveUp)
}

// TestSessionOverLossyKDNET repeats the conversation with 10% of the datagrams in each direction dropped,
// duplicated or delayed past the next one (seeded, so a failure reproduces).
func TestSessionOverLossyKDNET(t *testing.T) {
	for _, seed := range []uint64{1, 2} {
		t.Run("seed"+string(rune('0'+seed)), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			hc, tc := newLossyConn(udpConn(t), seed, 0.10), newLossyConn(udpConn(t), seed+100, 0.10)
			p := newClassicPair(t, ctx, "lossy.link.1.2", "lossy.link.1.2", hc, tc)
			hs, mt := runSessions(t, ctx, p.host, p.target)
			require.NoError(t, kdtest.Scenario(ctx, hs, mt.Mem, sessionMemBase, 1000, seed))
			hd, hdup, hdel := hc.counts()
			td, tdup, tdel := tc.counts()
			t.Logf("host->target dropped %d duplicated %d delayed %d; target->host dropped %d duplicated %d delayed %d",
				hd, hdup, hdel, td, tdup, tdel)
			require.Positive(t, hd+td)
			require.Positive(t, hdup+tdup)
			require.Positive(t, hdel+tdel)
			// Duplicates and late datagrams are caught by the KDNET sequence check before the KD layer sees them.
			require.Positive(t, p.target.Stats().Stale+p.host.Stats().Stale)
			t.Logf("host stats %+v", p.host.Stats())
			t.Logf("target stats %+v", p.target.Stats())
			t.Logf("session metrics %+v", hs.Metrics())
		})
	}
}

// TestSessionWrongKeyKDNET: with mismatched keys nothing gets through; the host session's RESET fails and
// both transports count HMAC rejections.
func TestSessionWrongKeyKDNET(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := newClassicPair(t, ctx, "right.key.1.2", "wrong.key.1.2", nil, nil)
	hs, mt := runSessions(t, ctx, p.host, p.target)
	rctx, rcancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer rcancel()
	require.Error(t, hs.Reset(rctx))
	require.Zero(t, mt.Serves.Load())
	require.Zero(t, mt.Stops.Load())
	hst, tst := p.host.Stats(), p.target.Stats()
	require.Positive(t, hst.RejectedTag)
	require.Zero(t, hst.Accepted)
	require.Zero(t, tst.Accepted)
	require.Zero(t, hst.Handshakes+tst.Handshakes)
	require.Contains(t, hst.LastRejected, "HMAC tag mismatch")
}

// TestSessionTargetModeKDNET runs the conversation with the debugger initiating (`target=`), over a socket
// pair where the target never pokes on its own.
func TestSessionTargetModeKDNET(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	k, err := ParseKey("target.mode.1.2")
	require.NoError(t, err)
	tg, err := NewTarget(ctx, TargetConfig{Key: k, Local: loopback, PokeInterval: time.Hour})
	require.NoError(t, err)
	t.Cleanup(func() { tg.Close() })
	h, err := NewHost(ctx, HostConfig{Key: k, Local: loopback, Target: tg.LocalAddr(), ConnectInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	hs, mt := runSessions(t, ctx, h, tg)
	require.NoError(t, kdtest.Scenario(ctx, hs, mt.Mem, sessionMemBase, 100, 5))
}

var _ net.PacketConn = (*lossyConn)(nil)
