package rsp

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeStub answers the handshake like QEMU and hands every later packet to handle, which returns the replies
// to send (possibly none) after an optional delay. It is for faults a real QEMU does not produce on demand.
func fakeStub(t *testing.T, handle func(pkt string) (replies []string, delay time.Duration)) *Client {
	t.Helper()
	srv, cli := net.Pipe()
	t.Cleanup(func() { srv.Close() })
	go func() {
		br := bufio.NewReader(srv)
		for {
			p, err := ReadPacket(br)
			if err != nil {
				return
			}
			var replies []string
			var delay time.Duration
			switch s := string(p); {
			case s == "?":
				replies = []string{"T05thread:01;"}
			case strings.HasPrefix(s, "qSupported"):
				replies = []string{"PacketSize=1000;qXfer:features:read+;multiprocess+"}
			case strings.HasPrefix(s, "qXfer:features:read:target.xml"):
				replies = []string{`l<target><feature><reg name="rip" bitsize="64"/></feature></target>`}
			case strings.HasPrefix(s, "Qqemu."):
				replies = []string{"OK"}
			case s == "qfThreadInfo":
				replies = []string{"mp01.01"}
			case s == "qsThreadInfo":
				replies = []string{"l"}
			default:
				replies, delay = handle(s)
			}
			time.Sleep(delay) // replies stay in order, as QEMU's do
			for _, r := range replies {
				if _, err := srv.Write(append([]byte("+"), Encode([]byte(r))...)); err != nil {
					return
				}
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := NewClient(ctx, cli, nil)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestAbandonedRequestDoesNotDesync(t *testing.T) {
	c := fakeStub(t, func(pkt string) ([]string, time.Duration) {
		if pkt == "qslow" {
			return []string{"late"}, 300 * time.Millisecond
		}
		return []string{"reply-to-" + pkt}, 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Request(ctx, "qslow")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	r, err := c.Request(context.Background(), "qnext")
	require.NoError(t, err)
	require.Equal(t, "reply-to-qnext", string(r), "the late reply was not taken for this one")
}

func TestPacketLostToRunningVM(t *testing.T) {
	c := fakeStub(t, func(pkt string) ([]string, time.Duration) {
		if pkt == "g" {
			// What QEMU does when the VM was resumed behind our back: stop it, drop the packet.
			return []string{"T02thread:p01.01;"}, 0
		}
		return []string{"OK"}, 0
	})
	_, err := c.Request(context.Background(), "g")
	require.ErrorIs(t, err, ErrPacketLost)
	select {
	case sr := <-c.Stops():
		require.EqualValues(t, SigInt, sr.Signal)
	case <-time.After(5 * time.Second):
		t.Fatal("the stop was not delivered")
	}
	r, err := c.Request(context.Background(), "qok")
	require.NoError(t, err)
	require.Equal(t, "OK", string(r))
}

func TestConnectionLossFailsPendingAndLaterCalls(t *testing.T) {
	var c *Client
	c = fakeStub(t, func(pkt string) ([]string, time.Duration) {
		if pkt == "qdie" {
			go c.conn.Close()
		}
		return nil, 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Request(ctx, "qdie")
	require.ErrorIs(t, err, ErrGone)
	_, err = c.Request(ctx, "qafter")
	require.ErrorIs(t, err, ErrGone)
	require.NoError(t, ctx.Err())
	<-c.Done()
}

func TestPacketLostInPipelineDropsTheRest(t *testing.T) {
	first := true
	c := fakeStub(t, func(pkt string) ([]string, time.Duration) {
		if strings.HasPrefix(pkt, "m") && first {
			first = false
			return []string{"T02thread:p01.01;"}, 0 // the first packet stopped the VM and was dropped
		}
		if strings.HasPrefix(pkt, "m") {
			return []string{"00"}, 100 * time.Millisecond // arrive after the next request was sent
		}
		return []string{"reply-to-" + pkt}, 0
	})
	require.NoError(t, c.acquire(context.Background()))
	_, _, err := c.exchangeLocked(context.Background(), []string{"m1000,1", "m1001,1", "m1002,1"}, false, false)
	c.release()
	require.ErrorIs(t, err, ErrPacketLost)
	<-c.Stops()
	r, err := c.Request(context.Background(), "qnext")
	require.NoError(t, err)
	require.Equal(t, "reply-to-qnext", string(r))
}
