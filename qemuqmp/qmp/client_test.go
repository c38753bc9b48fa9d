package qmp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/qemuqmp/qemutest"
	"github.com/kdstub/kdstub/qemuqmp/qmp"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRealQEMU(t *testing.T) {
	q := qemutest.Start(t, qemutest.Options{})
	ctx := ctxFor(t)
	c, err := qmp.Dial(ctx, "unix:"+q.QMPSocket, nil)
	require.NoError(t, err)
	defer c.Close()

	// A reply far above 64 KiB, then the connection still works.
	schema, err := c.Execute(ctx, "query-qmp-schema", nil)
	require.NoError(t, err)
	require.Greater(t, len(schema), 100<<10)
	st, err := c.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, "prelaunch", st.Status)

	// Typed errors.
	_, err = c.Execute(ctx, "no-such-command", nil)
	var qe *qmp.Error
	require.ErrorAs(t, err, &qe)
	require.Equal(t, "CommandNotFound", qe.Class)

	// Events interleave with replies and arrive in order.
	require.NoError(t, c.Cont(ctx))
	require.NoError(t, c.Stop(ctx))
	require.NoError(t, c.SystemReset(ctx))
	var names []string
	for len(names) < 3 {
		select {
		case ev := <-c.Events():
			names = append(names, ev.Name)
		case <-ctx.Done():
			t.Fatalf("events so far: %v", names)
		}
	}
	require.Equal(t, []string{"RESUME", "STOP", "RESET"}, names)

	out, err := c.HMP(ctx, "info status")
	require.NoError(t, err)
	require.Contains(t, out, "paused")
	regs, err := c.InfoRegisters(ctx, 0)
	require.NoError(t, err)
	require.EqualValues(t, 0xfff0, regs.Regs.RIP, "reset vector")
	mm, err := c.MemoryMap(ctx)
	require.NoError(t, err)
	require.Equal(t, "pc.ram", qmp.RAMBlock(mm))
	cpus, err := c.CPUs(ctx)
	require.NoError(t, err)
	require.Len(t, cpus, 1)
	k, err := c.QueryKVM(ctx)
	require.NoError(t, err)
	require.False(t, k.Enabled, "tests run under TCG")

	require.NoError(t, c.Quit(ctx))
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("connection did not close after quit")
	}
	_, err = c.Status(ctx)
	require.ErrorIs(t, err, qmp.ErrGone)
}

// fakeQEMU serves one connection with a scripted handler, for faults a real QEMU will not produce on demand.
func fakeQEMU(t *testing.T, handle func(r *bufio.Reader, w net.Conn)) string {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintln(conn, `{"QMP": {"version": {}, "capabilities": []}}`)
		r := bufio.NewReader(conn)
		line, _ := r.ReadBytes('\n')
		var req struct{ ID json.RawMessage }
		_ = json.Unmarshal(line, &req)
		fmt.Fprintf(conn, `{"return": {}, "id": %s}`+"\n", req.ID)
		handle(r, conn)
	}()
	return "unix:" + path
}

func TestEventFloodDoesNotBlockReplies(t *testing.T) {
	addr := fakeQEMU(t, func(r *bufio.Reader, w net.Conn) {
		line, _ := r.ReadBytes('\n')
		var req struct{ ID json.RawMessage }
		_ = json.Unmarshal(line, &req)
		for i := range 10000 { // nobody reads Events
			fmt.Fprintf(w, `{"event": "E%d"}`+"\n", i)
		}
		fmt.Fprintf(w, `{"return": {"status": "running", "running": true}, "id": %s}`+"\n", req.ID)
		time.Sleep(time.Second)
	})
	ctx := ctxFor(t)
	c, err := qmp.Dial(ctx, addr, nil)
	require.NoError(t, err)
	defer c.Close()
	st, err := c.Status(ctx)
	require.NoError(t, err)
	require.True(t, st.Running)
}

func TestReplyWithoutIDAndConnectionLoss(t *testing.T) {
	addr := fakeQEMU(t, func(r *bufio.Reader, w net.Conn) {
		_, _ = r.ReadBytes('\n')
		// QEMU answers a command it cannot parse without an id.
		fmt.Fprintln(w, `{"error": {"class": "GenericError", "desc": "JSON parse error"}}`)
		_, _ = r.ReadBytes('\n')
		// then dies mid-command
	})
	ctx := ctxFor(t)
	c, err := qmp.Dial(ctx, addr, nil)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Execute(ctx, "x", nil)
	var qe *qmp.Error
	require.ErrorAs(t, err, &qe)
	require.Equal(t, "GenericError", qe.Class)
	_, err = c.Execute(ctx, "query-status", nil)
	require.ErrorIs(t, err, qmp.ErrGone)
	require.NoError(t, ctx.Err(), "returned because of the loss, not the deadline")
}
