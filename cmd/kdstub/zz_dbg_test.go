package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
)

func TestDbgReset(t *testing.T) {
	ls := startLiveStub(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, done := ls.connect(t, ctx, nil)
	defer done()
	require.NoError(t, c.Attach(ctx))
	check := func(what string) {
		require.NoError(t, c.Continue2(ctx, kdproto.ContinueOptions{}))
		time.Sleep(300 * time.Millisecond)
		sc, err := c.BreakIn(ctx)
		require.NoError(t, err)
		t.Logf("after %s: pc %#x cpu %d", what, sc.ProgramCounter, sc.Processor)
	}
	check("nothing")
	seen := map[uint32]bool{}
	for _, r := range windbgRequests(t) {
		api := r.Req.APINumber
		if seen[api] || kdproto.NoReply(api) {
			continue
		}
		seen[api] = true
		req := *r.Req
		cur, err := c.GetContext(ctx, c.Processor())
		require.NoError(t, err)
		b, _ := cur.MarshalBinary()
		switch api {
		case kdproto.APISetContext:
			req.Data = b
		case kdproto.APIWriteControlSpace:
			ks, err := c.ReadControlSpace(ctx, c.Processor(), 2, 0xE0)
			require.NoError(t, err)
			req.Data = ks
		}
		resp, err := c.Session().Request(ctx, &req)
		require.NoError(t, err)
		t.Logf("%s status %#x", kdproto.APIName(api), resp.ReturnStatus)
		check(kdproto.APIName(api))
	}
}
