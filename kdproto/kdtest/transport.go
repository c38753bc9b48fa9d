// Package kdtest holds test doubles for KD sessions: an in-memory Transport pair, a lossy shim that drops,
// duplicates and reorders frames with a seeded generator, a recorder, a small memory-backed target, and a
// scripted host scenario. Any transport (serial, KDNET) can be checked with the same scenario.
package kdtest

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/kdstub/kdstub/kdproto"
)

// ErrClosed is returned by a closed in-memory transport.
var ErrClosed = errors.New("kdtest: transport closed")

// chanTransport is one end of an in-memory packet pipe.
type chanTransport struct {
	in, out   chan *kdproto.Packet
	closed    chan struct{}
	peer      *chanTransport
	closeOnce sync.Once
}

// Pair returns two connected in-memory Transports. Packets are copied so neither side aliases the other's
// buffers; a full queue drops the packet, as a lossy wire would.
func Pair() (kdproto.Transport, kdproto.Transport) {
	ab, ba := make(chan *kdproto.Packet, 256), make(chan *kdproto.Packet, 256)
	a := &chanTransport{in: ba, out: ab, closed: make(chan struct{})}
	b := &chanTransport{in: ab, out: ba, closed: make(chan struct{})}
	a.peer, b.peer = b, a
	return a, b
}

func (c *chanTransport) ReadPacket(ctx context.Context) (*kdproto.Packet, error) {
	select {
	case p := <-c.in:
		return p, nil
	case <-c.closed:
		return nil, ErrClosed
	case <-c.peer.closed:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *chanTransport) WritePacket(ctx context.Context, p *kdproto.Packet) error {
	q := *p
	q.Data = append([]byte(nil), p.Data...)
	select {
	case <-c.closed:
		return ErrClosed
	case <-c.peer.closed:
		return ErrClosed
	default:
	}
	select {
	case c.out <- &q:
	default:
	}
	return ctx.Err()
}

func (c *chanTransport) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

// Lossy wraps a Transport and, on writes, drops, duplicates or delays-and-reorders a fraction of frames. A
// delayed frame is sent after the next frame (a swap) or, if none follows, after HoldFor.
type Lossy struct {
	inner   kdproto.Transport
	rate    float64
	HoldFor time.Duration

	mu      sync.Mutex
	rng     *rand.Rand
	held    *kdproto.Packet
	heldGen uint64
	Stats   LossyStats
}

// LossyStats counts what the shim did.
type LossyStats struct{ Frames, Dropped, Duplicated, Reordered int }

// NewLossy disturbs rate (0..1) of the frames written through inner, using a generator seeded with seed.
func NewLossy(inner kdproto.Transport, rate float64, seed uint64) *Lossy {
	return &Lossy{inner: inner, rate: rate, HoldFor: 20 * time.Millisecond, rng: rand.New(rand.NewPCG(seed, seed^0x9E3779B97F4A7C15))}
}

func (l *Lossy) ReadPacket(ctx context.Context) (*kdproto.Packet, error) {
	return l.inner.ReadPacket(ctx)
}

func (l *Lossy) WritePacket(ctx context.Context, p *kdproto.Packet) error {
	l.mu.Lock()
	l.Stats.Frames++
	held := l.held
	l.held = nil
	action := 0
	if x := l.rng.Float64(); x < l.rate {
		action = 1 + int(x/l.rate*3) // 1 drop, 2 duplicate, 3 hold
	}
	switch action {
	case 1:
		l.Stats.Dropped++
	case 2:
		l.Stats.Duplicated++
	case 3:
		if held == nil {
			l.Stats.Reordered++
			l.held = p
			l.heldGen++
			gen := l.heldGen
			time.AfterFunc(l.HoldFor, func() { l.flush(gen) })
		} else {
			action = 0
		}
	}
	l.mu.Unlock()
	var err error
	switch action {
	case 0:
		err = l.inner.WritePacket(ctx, p)
	case 2:
		err = errors.Join(l.inner.WritePacket(ctx, p), l.inner.WritePacket(ctx, p))
	}
	if held != nil {
		err = errors.Join(err, l.inner.WritePacket(ctx, held))
	}
	return err
}

// flush sends a held frame that no later frame overtook.
func (l *Lossy) flush(gen uint64) {
	l.mu.Lock()
	p := l.held
	if p == nil || gen != l.heldGen {
		l.mu.Unlock()
		return
	}
	l.held = nil
	l.mu.Unlock()
	_ = l.inner.WritePacket(context.Background(), p)
}

func (l *Lossy) Close() error { return l.inner.Close() }

// Snapshot returns the shim's counters.
func (l *Lossy) Snapshot() LossyStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Stats
}

// Recorder wraps a Transport and records every packet written and read, in order.
type Recorder struct {
	inner kdproto.Transport
	mu    sync.Mutex
	log   []Recorded
}

// Recorded is one packet seen by a Recorder.
type Recorded struct {
	Sent bool // written by this side (false: read)
	P    kdproto.Packet
}

// NewRecorder wraps inner.
func NewRecorder(inner kdproto.Transport) *Recorder { return &Recorder{inner: inner} }

func (r *Recorder) ReadPacket(ctx context.Context) (*kdproto.Packet, error) {
	p, err := r.inner.ReadPacket(ctx)
	if err == nil {
		r.add(false, p)
	}
	return p, err
}

func (r *Recorder) WritePacket(ctx context.Context, p *kdproto.Packet) error {
	r.add(true, p)
	return r.inner.WritePacket(ctx, p)
}

func (r *Recorder) Close() error { return r.inner.Close() }

func (r *Recorder) add(sent bool, p *kdproto.Packet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, Recorded{Sent: sent, P: *p})
}

// Log returns a copy of everything recorded so far.
func (r *Recorder) Log() []Recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Recorded(nil), r.log...)
}
