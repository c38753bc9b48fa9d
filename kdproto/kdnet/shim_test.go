package kdnet

import (
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// lossyConn wraps a UDP socket and, with a seeded generator, drops, duplicates or delays (reorders) a fraction
// of outgoing datagrams. Only writes are disturbed: wrapping both ends covers both directions.
type lossyConn struct {
	net.PacketConn
	mu      sync.Mutex
	rng     *rand.Rand
	rate    float64 // total fraction of datagrams disturbed
	held    []heldDatagram
	dropped int
	duped   int
	delayed int
}

type heldDatagram struct {
	b  []byte
	to net.Addr
}

func newLossyConn(c net.PacketConn, seed uint64, rate float64) *lossyConn {
	return &lossyConn{PacketConn: c, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), rate: rate}
}

func (c *lossyConn) WriteTo(b []byte, to net.Addr) (int, error) {
	c.mu.Lock()
	r := c.rng.Float64()
	held := c.held
	c.held = nil
	switch {
	case r < c.rate/3:
		c.dropped++
		c.mu.Unlock()
		c.flush(held)
		return len(b), nil
	case r < 2*c.rate/3:
		c.duped++
		c.mu.Unlock()
		c.PacketConn.WriteTo(b, to)
	case r < c.rate:
		// Hold this one back: it goes out after the next datagram, or after a short while if none follows.
		c.delayed++
		cp := append([]byte(nil), b...)
		c.held = append(held, heldDatagram{cp, to})
		c.mu.Unlock()
		time.AfterFunc(30*time.Millisecond, func() {
			c.mu.Lock()
			h := c.held
			c.held = nil
			c.mu.Unlock()
			c.flush(h)
		})
		return len(b), nil
	default:
		c.mu.Unlock()
	}
	n, err := c.PacketConn.WriteTo(b, to)
	c.flush(held)
	return n, err
}

func (c *lossyConn) flush(h []heldDatagram) {
	for _, d := range h {
		c.PacketConn.WriteTo(d.b, d.to)
	}
}

func (c *lossyConn) counts() (dropped, duped, delayed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped, c.duped, c.delayed
}

// tapConn records every datagram written, so tests can replay them.
type tapConn struct {
	net.PacketConn
	mu   sync.Mutex
	sent [][]byte
}

func (c *tapConn) WriteTo(b []byte, to net.Addr) (int, error) {
	c.mu.Lock()
	c.sent = append(c.sent, append([]byte(nil), b...))
	c.mu.Unlock()
	return c.PacketConn.WriteTo(b, to)
}

func (c *tapConn) written() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.sent...)
}
