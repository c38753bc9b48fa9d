package kdnet

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
)

type synthFrame struct {
	src, dst netip.AddrPort
	payload  []byte
	notUDP   bool
}

// ethUDP wraps a payload in Ethernet/IP/UDP (or Ethernet/IPv4/TCP for notUDP) with valid lengths and checksums.
func ethUDP(t *testing.T, f synthFrame) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
	udp := &layers.UDP{SrcPort: layers.UDPPort(f.src.Port()), DstPort: layers.UDPPort(f.dst.Port())}
	var netLayer gopacket.NetworkLayer
	var ls []gopacket.SerializableLayer
	if f.src.Addr().Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: f.src.Addr().AsSlice(), DstIP: f.dst.Addr().AsSlice()}
		netLayer = ip
		ls = append(ls, eth, ip)
		if f.notUDP {
			ip.Protocol = layers.IPProtocolTCP
			tcp := &layers.TCP{SrcPort: 1, DstPort: 2, Window: 100}
			require.NoError(t, tcp.SetNetworkLayerForChecksum(ip))
			ls = append(ls, tcp, gopacket.Payload(f.payload))
			return serialize(t, ls)
		}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: f.src.Addr().AsSlice(), DstIP: f.dst.Addr().AsSlice()}
		netLayer = ip
		ls = append(ls, eth, ip)
	}
	require.NoError(t, udp.SetNetworkLayerForChecksum(netLayer))
	return serialize(t, append(ls, udp, gopacket.Payload(f.payload)))
}

func serialize(t *testing.T, ls []gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	require.NoError(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...))
	return buf.Bytes()
}

// synthConversation is a handshake and a few KD packets made with this package's own encoder.
func synthConversation(t *testing.T, key string) (ControlKey, []synthFrame) {
	k, err := ParseKey(key)
	require.NoError(t, err)
	keys := NewKeys(k)
	tgt := netip.MustParseAddrPort("10.1.0.2:50000")
	host := netip.MustParseAddrPort("10.1.0.1:50000")
	seal := func(d *Datagram) []byte {
		d.Version = Version5
		b, err := keys.Seal(d)
		require.NoError(t, err)
		return b
	}
	poke, _ := (&Poke{Nonce: [32]byte{1}, Target: tgt, Host: host}).MarshalBinary()
	resp, _ := (&Response{Nonce: [32]byte{1}, HostRandom: [32]byte{9}}).MarshalBinary()
	var frames []synthFrame
	frames = append(frames, synthFrame{src: tgt, dst: host, payload: seal(&Datagram{Channel: ChannelControl, Seq: 1, Payload: poke})})
	frames = append(frames, synthFrame{src: host, dst: tgt, payload: seal(&Datagram{Channel: ChannelControl, Seq: 1, FromHost: true, Payload: resp})})
	dk, err := DeriveDataKey(k, resp)
	require.NoError(t, err)
	keys.SetDataKey(dk)
	cc, _ := kdproto.NewConnCheckPacket(0x0a010001).MarshalBinary()
	frames = append(frames, synthFrame{src: tgt, dst: host, payload: seal(&Datagram{Channel: ChannelData, Seq: 1, Payload: cc})})
	rs, _ := kdproto.NewControlPacket(kdproto.PacketTypeResend, 0).MarshalBinary()
	frames = append(frames, synthFrame{src: host, dst: tgt, payload: seal(&Datagram{Channel: ChannelData, Seq: 1, FromHost: true, Payload: rs})})
	frames = append(frames, synthFrame{src: host, dst: tgt, payload: seal(&Datagram{Channel: ChannelData, Seq: 2, FromHost: true, Payload: []byte{0x62}})})
	// Not KDNET at all, a non-UDP frame, and an IPv6 datagram with a broken tag.
	frames = append(frames, synthFrame{src: netip.MustParseAddrPort("10.1.0.9:53"), dst: host, payload: []byte("hello dns, this datagram is long enough to be looked at")})
	frames = append(frames, synthFrame{src: tgt, dst: host, payload: []byte("tcp"), notUDP: true})
	bad := seal(&Datagram{Channel: ChannelData, Seq: 3, Payload: rs})
	bad[len(bad)-1] ^= 1
	frames = append(frames, synthFrame{src: netip.MustParseAddrPort("[fd00::2]:50000"), dst: netip.MustParseAddrPort("[fd00::1]:50000"), payload: bad})
	return k, frames
}

func writeCapture(t *testing.T, ng, gz bool, frames []synthFrame) []byte {
	var out bytes.Buffer
	var w interface {
		WritePacket(gopacket.CaptureInfo, []byte) error
	}
	var flush func() error
	if ng {
		nw, err := pcapgo.NewNgWriter(&out, layers.LinkTypeEthernet)
		require.NoError(t, err)
		w, flush = nw, nw.Flush
	} else {
		pw := pcapgo.NewWriterNanos(&out)
		require.NoError(t, pw.WriteFileHeader(65535, layers.LinkTypeEthernet))
		w, flush = pw, func() error { return nil }
	}
	base := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	for i, f := range frames {
		b := ethUDP(t, f)
		ci := gopacket.CaptureInfo{Timestamp: base.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(b), Length: len(b)}
		require.NoError(t, w.WritePacket(ci, b))
	}
	require.NoError(t, flush())
	if !gz {
		return out.Bytes()
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	_, err := zw.Write(out.Bytes())
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return z.Bytes()
}

func TestDecodeCaptureFormats(t *testing.T) {
	k, frames := synthConversation(t, "q.w.e.r")
	for _, tc := range []struct {
		name   string
		ng, gz bool
	}{{"pcap", false, false}, {"pcap.gz", false, true}, {"pcapng", true, false}, {"pcapng.gz", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			s, err := DecodeCapture(context.Background(), bytes.NewReader(writeCapture(t, tc.ng, tc.gz, frames)), k, &out)
			require.NoError(t, err)
			require.Equal(t, Summary{Frames: 8, Datagrams: 7, Verified: 5, Failed: 2}, s)
			var lines []Line
			dec := json.NewDecoder(&out)
			for dec.More() {
				var l Line
				require.NoError(t, dec.Decode(&l))
				lines = append(lines, l)
			}
			require.Len(t, lines, 7)
			require.Equal(t, []int{1, 2, 3, 4, 5, 6, 8}, []int{lines[0].N, lines[1].N, lines[2].N, lines[3].N, lines[4].N, lines[5].N, lines[6].N})
			require.Equal(t, "2026-01-02T03:04:05.123456789Z", lines[0].Time)
			require.Equal(t, "poke", lines[0].KD["type"])
			require.Equal(t, "response", lines[1].KD["type"])
			require.True(t, lines[1].FromHost)
			require.Equal(t, "data", lines[2].Channel)
			require.Equal(t, true, lines[2].KD["conncheck"])
			require.Equal(t, uint64(2), lines[4].Seq)
			require.False(t, lines[5].Verified)
			require.Contains(t, lines[5].Error, "magic")
			require.Equal(t, "10.1.0.9:53", lines[5].Src)
			require.False(t, lines[6].Verified)
			require.Contains(t, lines[6].Error, "HMAC")
			require.Equal(t, "[fd00::2]:50000", lines[6].Src)
		})
	}
}

func TestCaptureReaderRejects(t *testing.T) {
	_, err := NewCaptureReader(bytes.NewReader([]byte("definitely not a capture")))
	require.ErrorIs(t, err, ErrCaptureFormat)
	_, err = NewCaptureReader(bytes.NewReader(nil))
	require.Error(t, err)
	_, err = NewCaptureReader(bytes.NewReader([]byte{0x1f, 0x8b, 8, 0, 1, 2, 3}))
	require.Error(t, err)
	// A truncated capture reports an error rather than silently stopping.
	_, frames := synthConversation(t, "1.2.3.4")
	b := writeCapture(t, true, false, frames)
	var out bytes.Buffer
	_, err = DecodeCapture(context.Background(), bytes.NewReader(b[:len(b)-7]), ControlKey{}, &out)
	require.Error(t, err)
}

// TestCaptureReaderHostileFraming: length fields that point past the data, or pcapng options the pcap library
// would index out of range, are reported as corrupt instead of allocating or panicking.
func TestCaptureReaderHostileFraming(t *testing.T) {
	_, frames := synthConversation(t, "1.2.3.4")
	pcap := writeCapture(t, false, false, frames[:1])
	huge := append([]byte(nil), pcap...)
	binary.LittleEndian.PutUint32(huge[pcapFileHeaderSize+8:], 0xfffffff0) // incl_len of record 1
	_, err := NewCaptureReader(bytes.NewReader(huge))
	require.ErrorIs(t, err, ErrCaptureCorrupt)

	ng := writeCapture(t, true, false, frames[:1])
	// Find the enhanced packet block and make its captured length absurd.
	off := 0
	for off+8 <= len(ng) {
		typ, blen := binary.LittleEndian.Uint32(ng[off:]), int(binary.LittleEndian.Uint32(ng[off+4:]))
		if typ == ngEnhancedPacket {
			bad := append([]byte(nil), ng...)
			binary.LittleEndian.PutUint32(bad[off+20:], 0x7ffffff0)
			_, err := NewCaptureReader(bytes.NewReader(bad))
			require.ErrorIs(t, err, ErrCaptureCorrupt)
			break
		}
		require.Positive(t, blen)
		off += blen
	}
	require.Less(t, off+8, len(ng), "no enhanced packet block found")

	// An interface whose timestamp resolution is 10^-64 s: the library's divisor wraps to zero and it would
	// divide by it for every packet. The reader must turn that into an error.
	le := binary.LittleEndian
	var b []byte
	b = le.AppendUint32(b, ngSectionHeader)
	b = le.AppendUint32(b, 28)
	b = le.AppendUint32(b, ngByteOrderMagic)
	b = le.AppendUint16(b, 1)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint64(b, ^uint64(0))
	b = le.AppendUint32(b, 28)
	b = le.AppendUint32(b, 1)  // interface description block
	b = le.AppendUint32(b, 32) // its length
	b = le.AppendUint16(b, uint16(layers.LinkTypeEthernet))
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint16(b, 9) // if_tsresol
	b = le.AppendUint16(b, 1)
	b = append(b, 64, 0, 0, 0) // 10^-64, padded
	b = le.AppendUint32(b, 0)  // end of options
	b = le.AppendUint32(b, 32)
	b = le.AppendUint32(b, ngEnhancedPacket)
	b = le.AppendUint32(b, 36)
	b = le.AppendUint32(b, 0) // interface 0
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 1) // timestamp
	b = le.AppendUint32(b, 1) // captured
	b = le.AppendUint32(b, 1) // original
	b = append(b, 0xaa, 0, 0, 0)
	b = le.AppendUint32(b, 36)
	cr, err := NewCaptureReader(bytes.NewReader(b))
	require.NoError(t, err)
	_, err = cr.Next()
	require.ErrorIs(t, err, ErrCaptureCorrupt)
}

// fragmentIPv4 splits one Ethernet/IPv4/UDP frame into IPv4 fragments carrying at most mtu bytes of IP payload.
func fragmentIPv4(t *testing.T, frame []byte, mtu int, id uint16) [][]byte {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	body := ip.Payload // UDP header + data
	var out [][]byte
	for off := 0; off < len(body); off += mtu {
		end := min(off+mtu, len(body))
		frag := *ip
		frag.Id, frag.FragOffset, frag.Flags = id, uint16(off/8), 0
		if end < len(body) {
			frag.Flags = layers.IPv4MoreFragments
		}
		e := *eth
		out = append(out, serialize(t, []gopacket.SerializableLayer{&e, &frag, gopacket.Payload(body[off:end])}))
	}
	return out
}

func TestDecodeCaptureReassemblesFragments(t *testing.T) {
	k, frames := synthConversation(t, "frag.ment.1.2")
	keys := NewKeys(k)
	resp, _ := (&Response{Nonce: [32]byte{1}, HostRandom: [32]byte{9}}).MarshalBinary()
	dk, err := DeriveDataKey(k, resp)
	require.NoError(t, err)
	keys.SetDataKey(dk)
	text := string(bytes.Repeat([]byte("0123456789abcdef"), 200))
	body, err := kdproto.EncodeBody(kdproto.NewPrintString(0, text))
	require.NoError(t, err)
	kd, err := kdproto.NewDataPacket(kdproto.PacketTypeDebugIO, 4, body).MarshalBinary()
	require.NoError(t, err)
	big, err := keys.Seal(&Datagram{Version: Version5, Channel: ChannelData, Seq: 2, Payload: kd})
	require.NoError(t, err)
	require.Greater(t, len(big), 3000)

	// Frames: handshake (2), then the big datagram in 3 fragments delivered out of order.
	var raw [][]byte
	for _, f := range frames[:2] {
		raw = append(raw, ethUDP(t, f))
	}
	frags := fragmentIPv4(t, ethUDP(t, synthFrame{src: frames[0].src, dst: frames[0].dst, payload: big}), 1480, 77)
	require.Len(t, frags, 3)
	raw = append(raw, frags[1], frags[0], frags[2])

	var pcap bytes.Buffer
	w := pcapgo.NewWriter(&pcap)
	require.NoError(t, w.WriteFileHeader(65535, layers.LinkTypeEthernet))
	for i, b := range raw {
		require.NoError(t, w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(int64(i), 0), CaptureLength: len(b), Length: len(b)}, b))
	}
	var out bytes.Buffer
	s, err := DecodeCapture(context.Background(), &pcap, k, &out)
	require.NoError(t, err)
	require.Equal(t, Summary{Frames: 5, Datagrams: 3, Verified: 3}, s)
	var last Line
	dec := json.NewDecoder(&out)
	for dec.More() {
		require.NoError(t, dec.Decode(&last))
	}
	require.Equal(t, 5, last.N)
	require.True(t, last.Reassembled)
	require.Equal(t, len(big), last.Len)
	require.Equal(t, text, last.KD["text"])
}
