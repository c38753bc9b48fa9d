package serial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/kdstub/kdstub/kdproto"
)

// Transport is a kdproto.Transport over a byte stream. One goroutine owns reading (started by New); it hands
// packets and errors to ReadPacket through a channel, so ReadPacket honours its context even though the
// underlying Read cannot be interrupted. Writes are serialized by a mutex.
type Transport struct {
	rw      io.ReadWriter
	in      chan readResult
	done    chan struct{}
	wmu     sync.Mutex
	closeMu sync.Once
	readErr error // set by the reader goroutine before done is closed
}

type readResult struct {
	p   *kdproto.Packet
	err error
}

// New starts the reader goroutine on rw. Close stops it (by closing rw when it is an io.Closer).
func New(rw io.ReadWriter) *Transport {
	t := &Transport{rw: rw, in: make(chan readResult, 64), done: make(chan struct{})}
	go t.readLoop()
	return t
}

func (t *Transport) readLoop() {
	r := NewReader(t.rw)
	for {
		p, err := r.ReadPacket()
		var fe *FrameError
		if err != nil && !errors.As(err, &fe) {
			t.readErr = err
			close(t.done)
			return
		}
		select {
		case t.in <- readResult{p, err}:
		default:
			// Nobody is reading fast enough: drop rather than stall the stream; KD retransmits.
		}
	}
}

// ReadPacket returns the next packet. A *FrameError (errors.Is kdproto.ErrCorruptPacket) means one packet was
// lost and the stream goes on; any other error means the stream ended.
func (t *Transport) ReadPacket(ctx context.Context) (*kdproto.Packet, error) {
	select {
	case r := <-t.in:
		return r.p, r.err
	default:
	}
	select {
	case r := <-t.in:
		return r.p, r.err
	case <-t.done:
		// Deliver anything queued before the end of the stream.
		select {
		case r := <-t.in:
			return r.p, r.err
		default:
		}
		return nil, fmt.Errorf("kd serial read: %w", t.readErr)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// WritePacket frames and writes one packet. A context deadline becomes a write deadline when rw is a net.Conn.
func (t *Transport) WritePacket(ctx context.Context, p *kdproto.Packet) error {
	b, err := AppendFrame(make([]byte, 0, kdproto.HeaderSize+len(p.Data)+1), p)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if c, ok := t.rw.(net.Conn); ok {
		dl, _ := ctx.Deadline()
		_ = c.SetWriteDeadline(dl) // zero time clears it
		if dl.IsZero() {
			stop := context.AfterFunc(ctx, func() { _ = c.SetWriteDeadline(time.Unix(1, 0)) })
			defer stop()
		}
	}
	if _, err := t.rw.Write(b); err != nil {
		return fmt.Errorf("kd serial write %s: %w", p, err)
	}
	return nil
}

// Close closes the underlying stream if it can be closed, which ends the reader goroutine.
func (t *Transport) Close() error {
	var err error
	t.closeMu.Do(func() {
		if c, ok := t.rw.(io.Closer); ok {
			err = c.Close()
		}
	})
	return err
}

// Done is closed when the reader goroutine has stopped (end of stream or Close).
func (t *Transport) Done() <-chan struct{} { return t.done }
