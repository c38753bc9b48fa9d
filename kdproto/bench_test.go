package kdproto_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/kdproto/kdtest"
)

// BenchmarkDecodePacketManipulate decodes a full-size ReadVirtualMemory response packet (header, checksum,
// body) and reports its cost as a ratio to copying the same bytes, measured in the same run.
func BenchmarkDecodePacketManipulate(b *testing.B) {
	m, _ := kdproto.NewManipulate(kdproto.APIReadVirtualMemory, &kdproto.ReadMemory64{TransferCount: kdproto.MaxManipulateData},
		make([]byte, kdproto.MaxManipulateData))
	body, _ := m.MarshalBinary()
	wire, _ := kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 0x80000000, body).MarshalBinary()

	var sink []byte
	start := time.Now()
	for range b.N {
		sink = append(sink[:0], wire...)
		_ = binary.LittleEndian.Uint32(sink)
	}
	baseline := time.Since(start)
	b.SetBytes(int64(len(wire)))
	b.ResetTimer()
	for range b.N {
		p, err := kdproto.DecodePacket(wire)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Body(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed())/float64(max(baseline, 1)), "x-copy")
}

// BenchmarkSessionRead measures one ReadVirtualMemory round trip (request, ACK, response, ACK) through host and
// target sessions over an in-memory transport, as a ratio to a bare request/response ping-pong of the same
// packets over the same transport without any session logic.
func BenchmarkSessionRead(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	req, _ := kdproto.NewManipulate(kdproto.APIReadVirtualMemory, &kdproto.ReadMemory64{TargetBaseAddress: memBase, TransferCount: 0x1000}, nil)
	reqBody, _ := req.MarshalBinary()
	rep := req.Reply(kdproto.StatusSuccess)
	rep.Data = make([]byte, kdproto.MaxManipulateData)
	repBody, _ := rep.MarshalBinary()

	// Baseline: the same request/response bytes ping-ponged over the same transport, no session logic.
	pa, pt := kdtest.Pair()
	go func() {
		for {
			if _, err := pt.ReadPacket(ctx); err != nil {
				return
			}
			_ = pt.WritePacket(ctx, kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 1, repBody))
		}
	}()
	start := time.Now()
	for range b.N {
		_ = pa.WritePacket(ctx, kdproto.NewDataPacket(kdproto.PacketTypeManipulate, 1, reqBody))
		if _, err := pa.ReadPacket(ctx); err != nil {
			b.Fatal(err)
		}
	}
	baseline := time.Since(start)
	_ = pa.Close()

	ha, ta := kdtest.Pair()
	defer func() { _ = ha.Close() }()
	cfg := kdproto.Config{Dialect: kdproto.DialectKDNET}
	host, target := kdproto.NewHost(ha, cfg), kdproto.NewTarget(ta, cfg)
	go func() { _ = host.Run(ctx) }()
	go func() { _ = target.Run(ctx) }()
	mt := &kdtest.MemTarget{Mem: make([]byte, 64<<10), Base: memBase}
	go func() { _ = mt.Serve(ctx, target) }()
	b.ResetTimer()
	for range b.N {
		if _, err := host.Request(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed())/float64(max(baseline, 1)), "x-pingpong")
}
