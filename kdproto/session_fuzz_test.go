package kdproto_test

import (
	"context"
	"testing"
	"time"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdtest"
)

// FuzzTargetSession feeds a target session hostile packet sequences (each input is a list of
// length-prefixed packets as DecodePacket reads them) while a server goroutine answers every request. The
// session must not panic and must shut down promptly afterwards, whatever ids, types and bodies arrive.
func FuzzTargetSession(f *testing.F) {
	m, _ := kdproto.NewManipulate(kdproto.APIGetVersion, nil, nil)
	body, _ := m.MarshalBinary()
	var seed []byte
	for _, p := range []*kdproto.Packet{
		kdproto.NewControlPacket(kdproto.PacketTypeReset, 0),
		kdproto.NewBreakinPacket(),
		kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 0x80800000, body),
		kdproto.NewControlPacket(kdproto.PacketTypeResend, 0),
		kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 0x80800000, body),
		kdproto.NewControlPacket(kdproto.PacketTypeAcknowledge, 0x80800800),
	} {
		b, _ := p.MarshalBinary()
		seed = append(append(seed, byte(len(b)), byte(len(b)>>8)), b...)
	}
	f.Add(seed, false)
	f.Add(seed, true)
	f.Fuzz(func(t *testing.T, in []byte, kdnet bool) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		a, b := kdtest.Pair()
		defer func() { _ = b.Close() }()
		cfg := kdproto.Config{Dialect: kdproto.DialectKDCOM, RetransmitInterval: time.Millisecond, MaxTries: 3}
		if kdnet {
			cfg.Dialect = kdproto.DialectKDNET
		}
		ts := kdproto.NewTarget(a, cfg)
		runDone := make(chan struct{})
		go func() { _ = ts.Run(ctx); close(runDone) }()
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-ts.BreakIns():
					sc := &kdproto.StateChange{NewState: kdproto.StateChangeException, U: &kdproto.Exception64{ExceptionCode: kdproto.StatusBreakpoint}}
					go func() { _ = ts.SendStateChange(ctx, sc) }()
				case req := <-ts.Requests():
					go func() { _ = ts.Respond(ctx, req.Reply(kdproto.StatusUnsuccessful)) }()
				}
			}
		}()
		go func() { // drain what the target sends
			for {
				if _, err := b.ReadPacket(ctx); err != nil {
					return
				}
			}
		}()
		for n := 0; len(in) >= 2 && n < 64; n++ {
			l := int(in[0]) | int(in[1])<<8
			in = in[2:]
			if l > len(in) {
				l = len(in)
			}
			p, err := kdproto.DecodePacket(in[:l])
			in = in[l:]
			if err != nil {
				continue
			}
			_ = b.WritePacket(ctx, p)
		}
		time.Sleep(2 * time.Millisecond)
		cancel()
		select {
		case <-runDone:
		case <-time.After(5 * time.Second):
			t.Fatal("session did not stop after its context ended")
		}
	})
}
