package rsp

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSettleStoppedWithoutStopReply: after "c" the stub never reports a stop (a fault a real QEMU does not
// produce on demand). The client leaves the running state only when query-status says stopped.
func TestSettleStoppedWithoutStopReply(t *testing.T) {
	c := fakeStub(t, func(pkt string) ([]string, time.Duration) {
		if pkt == "c" {
			return nil, 0 // no stop reply, ever
		}
		return []string{"reply-to-" + pkt}, 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, c.Continue(ctx))
	require.True(t, c.Running())
	running := func(context.Context) (bool, error) { return true, nil }
	stopped := func(context.Context) (bool, error) { return false, nil }
	settled, err := c.SettleStopped(ctx, running)
	require.NoError(t, err)
	require.False(t, settled, "QEMU says it runs: stay running")
	require.True(t, c.Running())
	settled, err = c.SettleStopped(ctx, stopped)
	require.NoError(t, err)
	require.True(t, settled)
	require.False(t, c.Running())
	r, err := c.Request(ctx, "qnext")
	require.NoError(t, err)
	require.Equal(t, "reply-to-qnext", string(r))
	settled, err = c.SettleStopped(ctx, stopped)
	require.NoError(t, err)
	require.False(t, settled, "nothing to settle when already stopped")
}

// TestExpiredContextKeepsConnection: a request whose context has already ended fails with the context's error
// and leaves the connection usable (it used to set a past write deadline and tear the connection down).
func TestExpiredContextKeepsConnection(t *testing.T) {
	c := fakeStub(t, func(pkt string) ([]string, time.Duration) { return []string{"reply-to-" + pkt}, 0 })
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err := c.Request(expired, "qa")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, ErrGone)
	require.ErrorIs(t, c.Continue(expired), context.DeadlineExceeded)
	require.False(t, c.Running(), "a resume that was never sent leaves the client stopped")
	r, err := c.Request(context.Background(), "qb")
	require.NoError(t, err)
	require.Equal(t, "reply-to-qb", string(r))
}
