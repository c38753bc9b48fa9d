package kdnet

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// maxDataKeys bounds how many handshakes' data keys the decoder keeps trying; older ones are forgotten.
const maxDataKeys = 8

// Line is the JSON record `kdstub kdnet decode` prints for one UDP datagram. Fields that could not be
// determined (a datagram that is not KDNET, or fails to verify) keep their zero value, and Error says why.
type Line struct {
	N           int            `json:"n"`
	Time        string         `json:"time"`
	Src         string         `json:"src"`
	Dst         string         `json:"dst"`
	Len         int            `json:"len"`
	Reassembled bool           `json:"reassembled,omitempty"` // the datagram came in IPv4 fragments
	Version     uint8          `json:"version"`
	Channel     string         `json:"channel"`
	Seq         uint64         `json:"seq"`
	FromHost    bool           `json:"from_host"`
	Pad         uint8          `json:"pad"`
	Verified    bool           `json:"verified"`
	KD          map[string]any `json:"kd,omitempty"`
	Error       string         `json:"error,omitempty"`
}

// Decoder turns captured KDNET datagrams into Lines. It follows the handshakes it sees (every verified host
// response yields a data key) so that a capture with re-handshakes decodes throughout.
type Decoder struct {
	keys     *Keys
	dataKeys []*Keys // newest first, at most maxDataKeys
}

// NewDecoder prepares a decoder for captures made with control key k.
func NewDecoder(k ControlKey) *Decoder {
	return &Decoder{keys: NewKeys(k)}
}

// Summary counts what DecodeCapture saw.
type Summary struct {
	Frames    int `json:"frames"`
	Datagrams int `json:"datagrams"`
	Verified  int `json:"verified"`
	Failed    int `json:"failed"`
	KDErrors  int `json:"kd_errors"`
}

// Decode builds the line for one UDP datagram. It never fails: problems end up in Line.Error.
func (d *Decoder) Decode(f *Frame) Line {
	l := Line{N: f.N, Time: f.Time.UTC().Format(time.RFC3339Nano), Src: f.Src.String(), Dst: f.Dst.String(),
		Len: len(f.Payload), Reassembled: f.Reassembled}
	version, ch, err := PeekHeader(f.Payload)
	if err != nil {
		l.Error = err.Error()
		return l
	}
	l.Version, l.Channel = version, ch.String()
	dg, err := d.open(f.Payload, ch)
	if err != nil {
		l.Error = err.Error()
		return l
	}
	l.Verified, l.Seq, l.FromHost, l.Pad = true, dg.Seq, dg.FromHost, dg.Pad
	var kerr error
	if ch == ChannelControl {
		l.KD, kerr = d.control(dg)
	} else {
		l.KD, kerr = describeKD(dg.Payload)
	}
	if kerr != nil {
		l.Error = kerr.Error()
		if l.KD == nil {
			l.KD = map[string]any{"raw": hex.EncodeToString(dg.Payload)}
		}
	}
	return l
}

func (d *Decoder) open(b []byte, ch Channel) (*Datagram, error) {
	if ch == ChannelControl {
		return d.keys.Open(b)
	}
	if len(d.dataKeys) == 0 {
		return nil, fmt.Errorf("open data datagram: %w", ErrNoDataKey)
	}
	var first error
	for _, k := range d.dataKeys {
		dg, err := k.Open(b)
		if err == nil {
			return dg, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, fmt.Errorf("no data key of the %d handshakes seen verifies it: %w", len(d.dataKeys), first)
}

// control describes a handshake body and, for a host response, installs the data key it yields.
func (d *Decoder) control(dg *Datagram) (map[string]any, error) {
	switch BodyKind(dg.Payload) {
	case "poke":
		var p Poke
		if err := p.UnmarshalBinary(dg.Payload); err != nil {
			return nil, err
		}
		return p.Describe(), nil
	case "response":
		var r Response
		if err := r.UnmarshalBinary(dg.Payload); err != nil {
			return nil, err
		}
		dk, err := DeriveDataKey(d.keys.Control, dg.Payload)
		if err != nil {
			return nil, err
		}
		k := d.keys.Clone()
		k.SetDataKey(dk)
		d.dataKeys = append([]*Keys{k}, d.dataKeys[:min(len(d.dataKeys), maxDataKeys-1)]...)
		m := r.Describe()
		m["data_key"] = hex.EncodeToString(dk[:])
		return m, nil
	case "empty":
		return map[string]any{"type": "connect"}, nil
	}
	return nil, fmt.Errorf("%w: unknown control body % x", ErrBody, dg.Payload[:min(len(dg.Payload), 2)])
}

// DecodeCapture reads a pcap/pcapng (optionally gzip-compressed) capture and writes one JSON line per UDP
// datagram to w. Frames that are not UDP are counted but get no line.
func DecodeCapture(ctx context.Context, r io.Reader, k ControlKey, w io.Writer) (Summary, error) {
	var s Summary
	cr, err := NewCaptureReader(r)
	if err != nil {
		return s, err
	}
	dec := NewDecoder(k)
	enc := json.NewEncoder(w)
	for {
		if err := ctx.Err(); err != nil {
			return s, fmt.Errorf("decode capture after %d frames: %w", s.Frames, err)
		}
		f, err := cr.Next()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			return s, err
		}
		s.Frames++
		if !f.UDP {
			continue
		}
		s.Datagrams++
		l := dec.Decode(f)
		switch {
		case !l.Verified:
			s.Failed++
		case l.Error != "":
			s.KDErrors++
			s.Verified++
		default:
			s.Verified++
		}
		if err := enc.Encode(&l); err != nil {
			return s, fmt.Errorf("write line for frame %d: %w", f.N, err)
		}
	}
}
