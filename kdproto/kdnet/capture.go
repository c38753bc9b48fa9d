package kdnet

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/ip4defrag"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// ErrCaptureFormat is returned when the input is neither pcap nor pcapng (optionally gzip-compressed).
var ErrCaptureFormat = errors.New("not a pcap or pcapng capture")

// maxCaptureFrames bounds how many frames one capture may hold, so a hostile file cannot make the reader loop forever.
const maxCaptureFrames = 10_000_000

// Frame is one captured packet, reduced to what KDNET decoding needs.
type Frame struct {
	N    int // 1-based frame number, counting every frame in the file (as Wireshark does)
	Time time.Time
	// Reassembled says the datagram came in IPv4 fragments; N is then the frame that completed it, and the
	// other fragments' frames yield Frames with UDP false.
	Reassembled bool
	// UDP is true when the frame holds a UDP datagram; Src, Dst and Payload are set only then.
	UDP      bool
	Src, Dst netip.AddrPort
	Payload  []byte
}

type packetReader interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// CaptureReader yields the frames of a pcap or pcapng file.
type CaptureReader struct {
	r        packetReader
	linkType func(ci gopacket.CaptureInfo) layers.LinkType
	n        int
	// defrag reassembles IPv4 fragments: a KD memory read answer (up to ~4 KB) exceeds a 1500-byte MTU, so
	// real captures carry big datagrams as fragments.
	defrag *ip4defrag.IPv4Defragmenter
}

// fragmentMaxAge bounds how long (in capture time) an incomplete fragmented datagram is kept.
const fragmentMaxAge = 30 * time.Second

// MaxCaptureSize bounds the (decompressed) capture NewCaptureReader accepts; it is read into memory whole so
// that its structure can be checked before the pcap library allocates buffers from length fields.
const MaxCaptureSize = 1 << 30

// NewCaptureReader detects the format by its magic: gzip (then looks again inside), pcapng, or pcap in
// either byte order and timestamp resolution.
func NewCaptureReader(r io.Reader) (*CaptureReader, error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("read capture magic: %w", err)
	}
	var src io.Reader = br
	if magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("open gzip capture: %w", err)
		}
		src = zr
	}
	data, err := io.ReadAll(io.LimitReader(src, MaxCaptureSize+1))
	if err != nil {
		return nil, fmt.Errorf("read capture: %w", err)
	}
	if len(data) > MaxCaptureSize {
		return nil, fmt.Errorf("capture larger than %d bytes", MaxCaptureSize)
	}
	if len(data) < 4 {
		return nil, fmt.Errorf("%w: only %d bytes", ErrCaptureFormat, len(data))
	}
	magic = data[:4]
	switch {
	case bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}):
		if err := checkPcapng(data); err != nil {
			return nil, err
		}
		var ng *pcapgo.NgReader
		err := guard(func() (err error) {
			ng, err = pcapgo.NewNgReader(bytes.NewReader(data), pcapgo.NgReaderOptions{WantMixedLinkType: true})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("open pcapng: %w", err)
		}
		return &CaptureReader{r: ng, defrag: ip4defrag.NewIPv4Defragmenter(), linkType: func(ci gopacket.CaptureInfo) layers.LinkType {
			if len(ci.AncillaryData) > 0 {
				if lt, ok := ci.AncillaryData[0].(layers.LinkType); ok {
					return lt
				}
			}
			return ng.LinkType()
		}}, nil
	case isPcapMagic(magic):
		if err := checkPcap(data); err != nil {
			return nil, err
		}
		pr, err := pcapgo.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("open pcap: %w", err)
		}
		return &CaptureReader{r: pr, defrag: ip4defrag.NewIPv4Defragmenter(), linkType: func(gopacket.CaptureInfo) layers.LinkType { return pr.LinkType() }}, nil
	}
	return nil, fmt.Errorf("%w: magic % x", ErrCaptureFormat, magic)
}

// guard turns a panic inside the pcap library into an error. The library indexes option values and divides
// by header-derived time scales without checking them, so a hostile file can make it panic; the decoder must
// report that file as corrupt instead.
func guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: pcap library failed on malformed input: %v", ErrCaptureCorrupt, r)
		}
	}()
	return f()
}

func isPcapMagic(m []byte) bool {
	for _, want := range [][]byte{
		{0xd4, 0xc3, 0xb2, 0xa1}, {0xa1, 0xb2, 0xc3, 0xd4}, // microsecond, LE / BE
		{0x4d, 0x3c, 0xb2, 0xa1}, {0xa1, 0xb2, 0x3c, 0x4d}, // nanosecond, LE / BE
	} {
		if bytes.Equal(m, want) {
			return true
		}
	}
	return false
}

// Next returns the next frame, or io.EOF after the last one.
func (c *CaptureReader) Next() (*Frame, error) {
	if c.n >= maxCaptureFrames {
		return nil, fmt.Errorf("capture has more than %d frames", maxCaptureFrames)
	}
	var data []byte
	var ci gopacket.CaptureInfo
	err := guard(func() (err error) {
		data, ci, err = c.r.ReadPacketData()
		return err
	})
	if err != nil {
		if errors.Is(err, io.EOF) && len(data) == 0 {
			return nil, io.EOF
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read frame %d: %w", c.n+1, err)
	}
	c.n++
	f := &Frame{N: c.n, Time: ci.Timestamp}
	pkt := gopacket.NewPacket(data, c.linkType(ci), gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	var src, dst netip.Addr
	transport := pkt.TransportLayer()
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
			if c.n%1000 == 0 {
				c.defrag.DiscardOlderThan(ci.Timestamp.Add(-fragmentMaxAge))
			}
			var whole *layers.IPv4
			if err := guard(func() (err error) {
				whole, err = c.defrag.DefragIPv4WithTimestamp(ip, ci.Timestamp)
				return err
			}); err != nil || whole == nil || whole.Protocol != layers.IPProtocolUDP {
				return f, nil // a fragment that completes nothing (yet), or a bad one: no datagram
			}
			f.Reassembled = true
			transport = gopacket.NewPacket(whole.Payload, layers.LayerTypeUDP, gopacket.Default).TransportLayer()
		}
	case *layers.IPv6:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
	default:
		return f, nil
	}
	udp, ok := transport.(*layers.UDP)
	if !ok {
		return f, nil
	}
	f.UDP = true
	f.Src = netip.AddrPortFrom(src, uint16(udp.SrcPort))
	f.Dst = netip.AddrPortFrom(dst, uint16(udp.DstPort))
	f.Payload = udp.Payload
	return f, nil
}
