package kdproto_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdtest"
)

// scriptedPeer is the far end of an in-memory pair driven by hand.
type scriptedPeer struct {
	t   *testing.T
	ctx context.Context
	tr  kdproto.Transport
}

func (p *scriptedPeer) read() *kdproto.Packet {
	p.t.Helper()
	pk, err := p.tr.ReadPacket(p.ctx)
	require.NoError(p.t, err)
	return pk
}

func (p *scriptedPeer) write(pk *kdproto.Packet) {
	p.t.Helper()
	require.NoError(p.t, p.tr.WritePacket(p.ctx, pk))
}

func startHost(t *testing.T, cfg kdproto.Config) (*kdproto.HostSession, *scriptedPeer, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	a, b := kdtest.Pair()
	t.Cleanup(func() { _ = a.Close() })
	h := kdproto.NewHost(a, cfg)
	go func() { _ = h.Run(ctx) }()
	return h, &scriptedPeer{t: t, ctx: ctx, tr: b}, ctx
}

// TestHostKDCOMResetAndSync: the host's RESET carries id 0, is re-sent until answered, and afterwards the
// host accepts the target's SYNC-flagged first packet and echoes its id in the ACK.
func TestHostKDCOMResetAndSync(t *testing.T) {
	h, peer, ctx := startHost(t, kdproto.Config{Dialect: kdproto.DialectKDCOM, RetransmitInterval: 30 * time.Millisecond})
	resetDone := make(chan error, 1)
	go func() { resetDone <- h.Reset(ctx) }()
	p := peer.read()
	require.Equal(t, kdproto.PacketTypeReset, p.Type)
	require.Equal(t, uint32(0), p.ID)
	p = peer.read() // not answered yet: re-sent
	require.Equal(t, kdproto.PacketTypeReset, p.Type)
	peer.write(kdproto.NewControlPacket(kdproto.PacketTypeReset, 0))
	require.NoError(t, <-resetDone)

	sc := &kdproto.StateChange{NewState: kdproto.StateChangeException, U: &kdproto.Exception64{ExceptionCode: kdproto.StatusBreakpoint}}
	body, err := sc.MarshalBinary()
	require.NoError(t, err)
	for range 2 { // the retransmission (same SYNC id) is a duplicate
		peer.write(kdproto.NewDataPacket(kdproto.PacketTypeStateChange64, 0x80800800, body))
		for {
			ack := peer.read()
			if ack.Type == kdproto.PacketTypeReset {
				continue // a late RESET retransmission
			}
			require.Equal(t, kdproto.PacketTypeAcknowledge, ack.Type)
			require.Equal(t, uint32(0x80800800), ack.ID)
			break
		}
	}
	got, err := h.WaitStateChange(ctx)
	require.NoError(t, err)
	require.Equal(t, kdproto.StatusBreakpoint, got.U.(*kdproto.Exception64).ExceptionCode)
	require.Equal(t, uint64(1), h.Metrics().Duplicates)

	// The host's first request carries 0x80800000; the target's answer 0x80800001 is accepted.
	type result struct {
		m   *kdproto.Manipulate
		err error
	}
	res := make(chan result, 1)
	req, err := kdproto.NewManipulate(kdproto.APIGetVersion, nil, nil)
	require.NoError(t, err)
	go func() { m, err := h.Request(ctx, req); res <- result{m, err} }()
	p = peer.read()
	require.Equal(t, kdproto.PacketTypeManipulate, p.Type)
	require.Equal(t, uint32(0x80800000), p.ID)
	peer.write(kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0x80800000))
	rep := req.Reply(kdproto.StatusSuccess)
	rep.U = kdproto.DefaultGetVersion64(22631, 1, 2, 3)
	body, err = rep.MarshalBinary()
	require.NoError(t, err)
	peer.write(kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 0x80800001, body))
	r := <-res
	require.NoError(t, r.err)
	require.Equal(t, uint16(22631), r.m.U.(*kdproto.GetVersion64).MinorVersion)
}

// TestHostKDNETConnCheckAndReset: the host answers the connection check with RESEND(0), its RESET carries
// its next id, and after the target's RESET the host accepts the target's current id again.
func TestHostKDNETConnCheckAndReset(t *testing.T) {
	h, peer, ctx := startHost(t, kdproto.Config{Dialect: kdproto.DialectKDNET, RetransmitInterval: time.Hour})
	peer.write(kdproto.NewConnCheckPacket(0xc0a80201))
	p := peer.read()
	require.Equal(t, kdproto.PacketTypeResend, p.Type)
	require.Equal(t, uint32(0), p.ID)

	sc := &kdproto.StateChange{NewState: kdproto.StateChangeException, U: &kdproto.Exception64{ExceptionCode: kdproto.StatusBreakpoint}}
	body, err := sc.MarshalBinary()
	require.NoError(t, err)
	peer.write(kdproto.NewDataPacket(kdproto.PacketTypeStateChange64, 0x62, body))
	require.Equal(t, uint32(0x62), peer.read().ID)
	_, err = h.WaitStateChange(ctx)
	require.NoError(t, err)

	resetDone := make(chan error, 1)
	go func() { resetDone <- h.Reset(ctx) }()
	p = peer.read()
	require.Equal(t, kdproto.PacketTypeReset, p.Type)
	require.Equal(t, uint32(0x80000000), p.ID)
	peer.write(kdproto.NewControlPacket(kdproto.PacketTypeReset, 0x62))
	require.NoError(t, <-resetDone)
	peer.write(kdproto.NewDataPacket(kdproto.PacketTypeStateChange64, 0x62, body)) // the re-sent pending packet
	require.Equal(t, uint32(0x62), peer.read().ID)
	_, err = h.WaitStateChange(ctx)
	require.NoError(t, err, "the re-sent state change after RESET is delivered, not dropped as a duplicate")
}

// TestSessionGivesUpAfterMaxTries: an unacknowledged packet is sent MaxTries times, then Send fails with ErrNoAck.
func TestSessionGivesUpAfterMaxTries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := kdtest.Pair()
	defer func() { _ = a.Close() }()
	ts := kdproto.NewTarget(a, kdproto.Config{Dialect: kdproto.DialectKDCOM, RetransmitInterval: 5 * time.Millisecond, MaxTries: 4})
	go func() { _ = ts.Run(ctx) }()
	err := ts.Print(ctx, 0, "nobody listens\n")
	require.ErrorIs(t, err, kdproto.ErrNoAck)
	n := 0
	for {
		short, c := context.WithTimeout(ctx, 50*time.Millisecond)
		_, rerr := b.ReadPacket(short)
		c()
		if rerr != nil {
			break
		}
		n++
	}
	require.Equal(t, 4, n)
	m := ts.Metrics()
	require.Equal(t, uint64(1), m.GaveUp)
	require.Equal(t, uint64(3), m.Retransmits)
}

// TestSessionEndsOnTransportError: a closed transport ends Run with an error, and blocked callers return.
func TestSessionEndsOnTransportError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := kdtest.Pair()
	h := kdproto.NewHost(a, kdproto.Config{})
	runErr := make(chan error, 1)
	go func() { runErr <- h.Run(ctx) }()
	waitErr := make(chan error, 1)
	go func() { _, err := h.WaitStateChange(ctx); waitErr <- err }()
	require.NoError(t, b.Close())
	err := <-runErr
	require.ErrorIs(t, err, kdtest.ErrClosed)
	require.ErrorIs(t, <-waitErr, kdproto.ErrSessionClosed)
	_, err = h.Request(ctx, &kdproto.Manipulate{APINumber: kdproto.APIGetVersion})
	require.True(t, errors.Is(err, kdproto.ErrSessionClosed), "got %v", err)
	require.ErrorIs(t, h.Run(ctx), kdproto.ErrSessionClosed, "Run runs once")
}

// TestPrintDeliveredToHostIO: a target PrintString reaches the host's IO channel as a DEBUG_IO packet.
func TestPrintDeliveredToHostIO(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := kdtest.Pair()
	defer func() { _ = a.Close() }()
	cfg := kdproto.Config{Dialect: kdproto.DialectKDCOM, RetransmitInterval: 100 * time.Millisecond}
	h, ts := kdproto.NewHost(a, cfg), kdproto.NewTarget(b, cfg)
	go func() { _ = h.Run(ctx) }()
	go func() { _ = ts.Run(ctx) }()
	require.NoError(t, ts.Print(ctx, 1, "BD: Boot Debugger Initialized\n"))
	select {
	case p := <-h.IO():
		body, err := p.Body()
		require.NoError(t, err)
		d := body.(*kdproto.DebugIO)
		require.Equal(t, kdproto.APIPrintString, d.APINumber)
		require.Equal(t, uint16(1), d.Processor)
		require.Equal(t, "BD: Boot Debugger Initialized\n", string(d.Data))
	case <-ctx.Done():
		t.Fatal("no DEBUG_IO delivered")
	}
}

// TestTargetResyncAcceptsRestartedHost: on KDNET a new debugger may restart its ids at 0x80000000 without a
// RESET; after Resync the target accepts them instead of dropping them as duplicates.
func TestTargetResyncAcceptsRestartedHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := kdtest.Pair()
	defer func() { _ = b.Close() }()
	ts := kdproto.NewTarget(a, kdproto.Config{Dialect: kdproto.DialectKDNET, RetransmitInterval: time.Hour})
	go func() { _ = ts.Run(ctx) }()
	peer := &scriptedPeer{t: t, ctx: ctx, tr: b}
	m, err := kdproto.NewManipulate(kdproto.APIGetVersion, nil, nil)
	require.NoError(t, err)
	body, err := m.MarshalBinary()
	require.NoError(t, err)
	send := func(id uint32) {
		peer.write(kdproto.NewDataPacket(kdproto.PacketTypeManipulate, id, body))
		require.Equal(t, id, peer.read().ID)
	}
	send(0x80000000)
	send(0x80000002)
	<-ts.Requests()
	<-ts.Requests()
	send(0x80000000) // the old debugger's id again: a duplicate
	require.Equal(t, uint64(1), ts.Metrics().Duplicates)
	require.NoError(t, ts.Resync(ctx))
	send(0x80000000)
	select {
	case <-ts.Requests():
	case <-ctx.Done():
		t.Fatal("request after Resync not delivered")
	}
}
