package serial_test

import (
	"context"
	"math/rand/v2"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdtest"
	"github.com/kdstub/kdstub/kdproto/serial"
)

const memBase = 0xfffff80412200000

func testMemory(n int) []byte {
	r := rand.New(rand.NewPCG(42, 43))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

// connect returns the host and target ends of a KD serial link of the given kind.
func connect(t *testing.T, ctx context.Context, kind string) (host, target *serial.Transport) {
	t.Helper()
	if kind == "pipe" {
		a, b := net.Pipe()
		return serial.New(a), serial.New(b)
	}
	network, addr := "tcp", "127.0.0.1:0"
	if kind == "unix" {
		network, addr = "unix", filepath.Join(t.TempDir(), "kd.sock")
	}
	ln, err := serial.Listen(ctx, network, addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	accepted := make(chan *serial.Transport, 1)
	go func() {
		tr, err := ln.Accept(ctx)
		if err == nil {
			accepted <- tr
		}
		close(accepted)
	}()
	host, err = serial.Dial(ctx, ln.Addr().Network(), ln.Addr().String())
	require.NoError(t, err)
	target, ok := <-accepted
	require.True(t, ok, "accept failed")
	return host, target
}

// runScenario runs both KDCOM roles and the memory target over the transports and the host scenario.
func runScenario(t *testing.T, ctx context.Context, hostT, targetT kdproto.Transport, cfg kdproto.Config, reads int) (*kdproto.HostSession, *kdproto.TargetSession) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	host, target := kdproto.NewHost(hostT, cfg), kdproto.NewTarget(targetT, cfg)
	mem := testMemory(64 << 10)
	mt := &kdtest.MemTarget{Mem: mem, Base: memBase}
	done := make(chan struct{}, 3)
	go func() { _ = host.Run(ctx); done <- struct{}{} }()
	go func() { _ = target.Run(ctx); done <- struct{}{} }()
	go func() { _ = mt.Serve(ctx, target); done <- struct{}{} }()
	defer func() {
		cancel()
		for range 3 {
			<-done
		}
		_ = hostT.Close()
		_ = targetT.Close()
	}()
	require.NoError(t, kdtest.Scenario(ctx, host, mem, memBase, reads, 3))
	require.Equal(t, int64(2), mt.Stops.Load())
	return host, target
}

// TestKDCOMSessions runs host and target KDCOM sessions against each other over net.Pipe, TCP loopback and a
// unix socket: RESET, break-in, GetVersion, 1000 reads, Continue2, break-in, Continue; clean and with 10 % of
// the frames dropped, duplicated or reordered in each direction.
func TestKDCOMSessions(t *testing.T) {
	for _, kind := range []string{"pipe", "tcp", "unix"} {
		for _, lossy := range []bool{false, true} {
			name := kind
			if lossy {
				name += "/lossy"
			}
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				defer cancel()
				h, tg := connect(t, ctx, kind)
				var hostT, targetT kdproto.Transport = h, tg
				// Clean links must not need a single retransmission, so the interval is far above any
				// scheduling delay on a loaded machine.
				cfg := kdproto.Config{Dialect: kdproto.DialectKDCOM, RetransmitInterval: 10 * time.Second}
				var lh, lt *kdtest.Lossy
				if lossy {
					lh, lt = kdtest.NewLossy(h, 0.10, 11), kdtest.NewLossy(tg, 0.10, 12)
					hostT, targetT = lh, lt
					cfg.RetransmitInterval, cfg.MaxTries = 40*time.Millisecond, 50
				}
				host, target := runScenario(t, ctx, hostT, targetT, cfg, 1000)
				hm, tm := host.Metrics(), target.Metrics()
				t.Logf("host %+v", hm)
				t.Logf("target %+v", tm)
				require.GreaterOrEqual(t, hm.Received, uint64(1002))
				if !lossy {
					require.Zero(t, hm.Retransmits+tm.Retransmits+hm.Duplicates+tm.Duplicates)
					return
				}
				sh, st := lh.Snapshot(), lt.Snapshot()
				t.Logf("shims %+v %+v", sh, st)
				require.NotZero(t, sh.Dropped+st.Dropped)
				require.NotZero(t, sh.Duplicated+st.Duplicated)
				require.NotZero(t, sh.Reordered+st.Reordered)
				require.NotZero(t, hm.Retransmits+tm.Retransmits)
			})
		}
	}
}

// corruptor flips a payload byte in some data frames so the receiver's framer sees a bad checksum.
type corruptor struct {
	net.Conn
	n int
}

func (c *corruptor) Write(b []byte) (int, error) {
	if len(b) > kdproto.HeaderSize+1 && b[0] == 0x30 {
		c.n++
		if c.n%5 == 0 {
			bad := append([]byte(nil), b...)
			bad[kdproto.HeaderSize] ^= 0x5A
			return c.Conn.Write(bad)
		}
	}
	return c.Conn.Write(b)
}

// TestKDCOMBadChecksumAnsweredWithResend: corrupted frames are reported by the framer, answered with RESEND,
// and the sender's retransmission completes the scenario.
func TestKDCOMBadChecksumAnsweredWithResend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := net.Pipe()
	hostT, targetT := serial.New(&corruptor{Conn: a}), serial.New(&corruptor{Conn: b})
	cfg := kdproto.Config{Dialect: kdproto.DialectKDCOM, RetransmitInterval: 5 * time.Second}
	host, target := runScenario(t, ctx, hostT, targetT, cfg, 100)
	hm, tm := host.Metrics(), target.Metrics()
	require.NotZero(t, tm.BadPackets)
	require.NotZero(t, hm.BadPackets)
	require.Equal(t, tm.BadPackets, tm.ResendsSent)
	require.NotZero(t, hm.ResendsReceived)
}
