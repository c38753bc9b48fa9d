package kdproto_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdtest"
)

// testMemory is the in-test target's memory: seeded random bytes.
func testMemory(n int) []byte {
	r := rand.New(rand.NewPCG(42, 43))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

const memBase = 0xfffff80412200000

type pairSetup struct {
	host   *kdproto.HostSession
	target *kdproto.TargetSession
	mt     *kdtest.MemTarget
	mem    []byte
}

// runPair starts both sessions and the memory target over the given transports; everything stops at cleanup.
func runPair(t *testing.T, ctx context.Context, hostT, targetT kdproto.Transport, cfg kdproto.Config) *pairSetup {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	ps := &pairSetup{host: kdproto.NewHost(hostT, cfg), target: kdproto.NewTarget(targetT, cfg), mem: testMemory(64 << 10)}
	ps.mt = &kdtest.MemTarget{Mem: ps.mem, Base: memBase}
	done := make(chan struct{}, 3)
	go func() { _ = ps.host.Run(ctx); done <- struct{}{} }()
	go func() { _ = ps.target.Run(ctx); done <- struct{}{} }()
	go func() { _ = ps.mt.Serve(ctx, ps.target); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		for range 3 {
			<-done
		}
		_ = hostT.Close()
		_ = targetT.Close()
	})
	return ps
}

// TestSessionKDNETIDRules runs the scenario over an in-memory transport with KDNET id rules and checks the ids
// on the wire: host 0x80000000 + 2n, target counting by 2 from its first id, ACKs echoing ids exactly.
func TestSessionKDNETIDRules(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := kdtest.Pair()
	rec := kdtest.NewRecorder(b) // the target's view
	cfg := kdproto.Config{Dialect: kdproto.DialectKDNET, RetransmitInterval: 10 * time.Second, FirstTargetID: 0x60}
	ps := runPair(t, ctx, a, rec, cfg)
	require.NoError(t, kdtest.Scenario(ctx, ps.host, ps.mem, memBase, 50, 1))

	var hostIDs, targetIDs []uint32
	for _, r := range rec.Log() {
		switch {
		case r.P.IsData() && !r.Sent:
			hostIDs = append(hostIDs, r.P.ID)
		case r.P.IsData() && r.Sent:
			targetIDs = append(targetIDs, r.P.ID)
		case r.P.IsControl() && r.Sent && r.P.Type == kdproto.PacketTypeAcknowledge:
			require.Equal(t, uint32(0x80000000), r.P.ID&0x80000000, "target ACKs echo host ids exactly")
		case r.P.IsControl() && !r.Sent && r.P.Type == kdproto.PacketTypeReset:
			require.Equal(t, uint32(0x80000000), r.P.ID, "the first RESET carries the host's next id")
		case r.P.IsControl() && r.Sent && r.P.Type == kdproto.PacketTypeReset:
			require.Equal(t, uint32(0x60), r.P.ID, "the target answers RESET with its current id")
		}
	}
	require.NotEmpty(t, hostIDs)
	for i, id := range hostIDs {
		require.Equal(t, uint32(0x80000000+2*i), id, "host id %d", i)
	}
	for i, id := range targetIDs {
		require.Equal(t, uint32(0x60+2*i), id, "target id %d", i)
	}
	m := ps.target.Metrics()
	require.Zero(t, m.Duplicates)
	require.Zero(t, m.Retransmits)
	require.Equal(t, uint64(len(hostIDs)), m.Received)
}

// TestSessionKDNETResetResendsPending: a RESET while a state change is pending is answered with the target's
// current id and the pending state change follows with that same id; duplicates (ids not above the last
// accepted) are ACKed but not delivered.
func TestSessionKDNETResetResendsPending(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hostEnd, targetEnd := kdtest.Pair()
	t.Cleanup(func() { _ = hostEnd.Close() })
	cfg := kdproto.Config{Dialect: kdproto.DialectKDNET, RetransmitInterval: time.Hour, FirstTargetID: 0x10}
	ts := kdproto.NewTarget(targetEnd, cfg)
	go func() { _ = ts.Run(ctx) }()

	read := func() *kdproto.Packet {
		t.Helper()
		p, err := hostEnd.ReadPacket(ctx)
		require.NoError(t, err)
		return p
	}
	write := func(p *kdproto.Packet) {
		t.Helper()
		require.NoError(t, hostEnd.WritePacket(ctx, p))
	}
	scDone := make(chan error, 1)
	sc := &kdproto.StateChange{NewState: kdproto.StateChangeException, U: &kdproto.Exception64{ExceptionCode: kdproto.StatusBreakpoint}}
	go func() { scDone <- ts.SendStateChange(ctx, sc) }()
	p := read()
	require.Equal(t, kdproto.PacketTypeStateChange64, p.Type)
	require.Equal(t, uint32(0x10), p.ID)
	write(kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0x10))
	require.NoError(t, <-scDone)

	// RESET with the host's next id: RESET(current id 0x12), then the pending state change re-sent as 0x12.
	write(kdproto.NewControlPacket(kdproto.PacketTypeReset, 0x80000060))
	p = read()
	require.True(t, p.IsControl())
	require.Equal(t, kdproto.PacketTypeReset, p.Type)
	require.Equal(t, uint32(0x12), p.ID)
	p = read()
	require.Equal(t, kdproto.PacketTypeStateChange64, p.Type)
	require.Equal(t, uint32(0x12), p.ID)
	write(kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0x12))

	// The request with the RESET's id is accepted; the same id again is a duplicate; a lower one too.
	m, err := kdproto.NewManipulate(kdproto.APIGetVersion, nil, nil)
	require.NoError(t, err)
	body, err := m.MarshalBinary()
	require.NoError(t, err)
	for _, id := range []uint32{0x80000060, 0x80000060, 0x8000005e} {
		write(kdproto.NewDataPacket(kdproto.PacketTypeManipulate, id, body))
		ack := read()
		require.Equal(t, kdproto.PacketTypeAcknowledge, ack.Type)
		require.Equal(t, id, ack.ID)
	}
	select {
	case got := <-ts.Requests():
		require.Equal(t, kdproto.APIGetVersion, got.APINumber)
	case <-ctx.Done():
		t.Fatal("request not delivered")
	}
	select {
	case <-ts.Requests():
		t.Fatal("duplicate delivered")
	case <-time.After(50 * time.Millisecond):
	}
	require.Equal(t, uint64(2), ts.Metrics().Duplicates)

	// RESEND with nothing in flight re-sends the pending state change under a new id.
	write(kdproto.NewControlPacket(kdproto.PacketTypeResend, 0))
	p = read()
	require.Equal(t, kdproto.PacketTypeStateChange64, p.Type)
	require.Equal(t, uint32(0x14), p.ID)
	write(kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0x14))

	// After ClearPending (the target resumed) RESET is answered but nothing is re-sent.
	require.NoError(t, ts.ClearPending(ctx))
	write(kdproto.NewControlPacket(kdproto.PacketTypeReset, 0x80000062))
	p = read()
	require.Equal(t, kdproto.PacketTypeReset, p.Type)
	require.Equal(t, uint32(0x16), p.ID)
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	_, err = hostEnd.ReadPacket(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// TestSessionKDCOMTargetRules checks the KDCOM target against hand-written host traffic: first id
// INITIAL|SYNC, masked ACK comparison, toggling, RESET answered with id 0 and the pending state change re-sent
// with INITIAL|SYNC, a bad-checksum report answered with RESEND, and a duplicate ACKed but not delivered.
func TestSessionKDCOMTargetRules(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hostEnd, targetEnd := kdtest.Pair()
	t.Cleanup(func() { _ = hostEnd.Close() })
	ts := kdproto.NewTarget(targetEnd, kdproto.Config{Dialect: kdproto.DialectKDCOM, RetransmitInterval: time.Hour})
	go func() { _ = ts.Run(ctx) }()
	read := func() *kdproto.Packet {
		t.Helper()
		p, err := hostEnd.ReadPacket(ctx)
		require.NoError(t, err)
		return p
	}
	write := func(p *kdproto.Packet) {
		t.Helper()
		require.NoError(t, hostEnd.WritePacket(ctx, p))
	}
	sc := &kdproto.StateChange{NewState: kdproto.StateChangeException, U: &kdproto.Exception64{ExceptionCode: kdproto.StatusBreakpoint}}
	scDone := make(chan error, 1)
	go func() { scDone <- ts.SendStateChange(ctx, sc) }()
	p := read()
	require.Equal(t, uint32(0x80800800), p.ID)
	write(kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0x80800000)) // WinDbg masks SYNC
	require.NoError(t, <-scDone)

	m, err := kdproto.NewManipulate(kdproto.APIGetVersion, nil, nil)
	require.NoError(t, err)
	body, err := m.MarshalBinary()
	require.NoError(t, err)
	write(kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 0x80800000, body))
	require.Equal(t, uint32(0x80800000), read().ID) // ACK echoes
	write(kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 0x80800000, body))
	ack := read()
	require.Equal(t, kdproto.PacketTypeAcknowledge, ack.Type, "duplicate is ACKed")
	req := <-ts.Requests()
	rDone := make(chan error, 1)
	go func() { rDone <- ts.Respond(ctx, req.Reply(kdproto.StatusSuccess)) }()
	p = read()
	require.Equal(t, uint32(0x80800001), p.ID, "second target packet toggles and drops SYNC")
	// RESET while the response waits for its ACK: RESET(0), then the response again as INITIAL|SYNC.
	write(kdproto.NewControlPacket(kdproto.PacketTypeReset, 0))
	p = read()
	require.Equal(t, kdproto.PacketTypeReset, p.Type)
	require.Equal(t, uint32(0), p.ID)
	p = read()
	require.Equal(t, kdproto.PacketTypeManipulate, p.Type)
	require.Equal(t, uint32(0x80800800), p.ID)
	write(kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0x80800800)) // unmasked echo is accepted too
	require.NoError(t, <-rDone)
	require.Equal(t, uint64(1), ts.Metrics().Duplicates)
	// A stray ACK is ignored.
	write(kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0x12345678))
	require.Eventually(t, func() bool { return ts.Metrics().StrayAcks == 1 }, 5*time.Second, time.Millisecond)
}

// TestSessionKDCOMLossyInMemory runs the full scenario with 1000 reads through a shim that drops, duplicates
// and reorders 10 % of the frames in each direction.
func TestSessionKDCOMLossyInMemory(t *testing.T) {
	for _, d := range []kdproto.Dialect{kdproto.DialectKDCOM, kdproto.DialectKDNET} {
		t.Run(d.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			a, b := kdtest.Pair()
			la, lb := kdtest.NewLossy(a, 0.10, 7), kdtest.NewLossy(b, 0.10, 8)
			cfg := kdproto.Config{Dialect: d, RetransmitInterval: 40 * time.Millisecond, MaxTries: 50}
			ps := runPair(t, ctx, la, lb, cfg)
			require.NoError(t, kdtest.Scenario(ctx, ps.host, ps.mem, memBase, 1000, 2))
			sa, sb := la.Snapshot(), lb.Snapshot()
			t.Logf("host shim %+v target shim %+v", sa, sb)
			t.Logf("host %+v", ps.host.Metrics())
			t.Logf("target %+v", ps.target.Metrics())
			require.NotZero(t, sa.Dropped+sb.Dropped)
			require.NotZero(t, sa.Duplicated+sb.Duplicated)
			require.NotZero(t, sa.Reordered+sb.Reordered)
			require.NotZero(t, ps.target.Metrics().Duplicates+ps.host.Metrics().Duplicates)
		})
	}
}

// A continue accepted by the target session ends the stop at once: a RESET that arrives before the server has
// acted on the continue (a second debugger attaching right after a detach) must not re-send the stale stop.
func TestTargetSessionContinueClearsPendingStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, b := kdtest.Pair()
	rec := kdtest.NewRecorder(b)
	cfg := kdproto.Config{Dialect: kdproto.DialectKDCOM, RetransmitInterval: 5 * time.Second}
	host, target := kdproto.NewHost(a, cfg), kdproto.NewTarget(rec, cfg)
	go func() { _ = host.Run(ctx) }()
	go func() { _ = target.Run(ctx) }()

	sc := &kdproto.StateChange{NewState: kdproto.StateChangeException, NumberProcessors: 1, ProgramCounter: memBase,
		U: &kdproto.Exception64{ExceptionCode: kdproto.StatusBreakpoint, ExceptionAddress: memBase, FirstChance: 1}}
	require.NoError(t, target.SendStateChange(ctx, sc))
	_, err := host.WaitStateChange(ctx)
	require.NoError(t, err)

	cont, err := kdproto.NewManipulate(kdproto.APIContinue2, &kdproto.Continue2{ContinueStatus: kdproto.DBGContinue, Dr7: 0x400, CurrentSymbolStart: 1}, nil)
	require.NoError(t, err)
	_, err = host.Request(ctx, cont)
	require.NoError(t, err)
	// Nobody consumes target.Requests(): the server has not acted on the continue yet.
	require.NoError(t, host.Reset(ctx))
	time.Sleep(300 * time.Millisecond) // a re-sent stop would follow the RESET answer immediately

	stops := 0
	for _, r := range rec.Log() {
		if r.Sent && r.P.IsData() && r.P.Type == kdproto.PacketTypeStateChange64 {
			stops++
		}
	}
	require.Equal(t, 1, stops, "the stop the debugger continued from must not be re-sent after RESET")
}
