package kdproto_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdtest"
)

// FuzzClientResponses answers every client request with hostile bytes (decoded as a manipulate response with
// the request's ApiNumber, or raw trailing data when they do not decode): every typed call must return, and
// nothing may panic, whatever a target sends.
func FuzzClientResponses(f *testing.F) {
	ok := &kdproto.Manipulate{APINumber: kdproto.APIReadVirtualMemory, U: &kdproto.ReadMemory64{ActualBytesRead: 0xFFFFFFFF}, Data: []byte{1, 2, 3}}
	b, err := ok.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Add(make([]byte, 56+0x4D0))
	f.Fuzz(func(t *testing.T, resp []byte) {
		if len(resp) > kdproto.MaxPayload {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a, bt := kdtest.Pair()
		cfg := kdproto.Config{Dialect: kdproto.DialectKDNET, RetransmitInterval: 20 * time.Millisecond}
		hs, ts := kdproto.NewHost(a, cfg), kdproto.NewTarget(bt, cfg)
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { defer wg.Done(); _ = hs.Run(ctx) }()
		go func() { defer wg.Done(); _ = ts.Run(ctx) }()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case req := <-ts.Requests():
					if kdproto.NoReply(req.APINumber) {
						continue
					}
					r, err := kdproto.DecodeManipulate(resp)
					if err != nil || r.APINumber != req.APINumber {
						r = req.Reply(kdproto.StatusSuccess)
						r.Data = resp[:min(len(resp), kdproto.MaxManipulateData)]
					}
					_ = ts.Respond(ctx, r)
				}
			}
		}()
		c := kdproto.NewClient(hs, nil)
		_, _ = c.GetVersion(ctx)
		_, _ = c.ReadVirtual(ctx, 0x1000, 5000)
		_, _ = c.ReadPhysical(ctx, 0x1000, 16)
		_, _ = c.GetContext(ctx, 0)
		_, _ = c.GetContext(ctx, 0)
		_, _ = c.ReadKSpecial(ctx, 0)
		_, _ = c.WriteBreakPoint(ctx, 0x1000)
		_, _ = c.ReadMSR(ctx, 0, 0xC0000080)
		_, _ = c.WriteVirtual(ctx, 0x1000, []byte{1, 2, 3})
		cancel()
		wg.Wait()
	})
}
