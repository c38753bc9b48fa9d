package kdnet

import (
	"errors"
	"sync"
	"sync/atomic"
)

// Stats counts what a transport did with datagrams. All fields are totals since the transport started.
type Stats struct {
	Received     uint64 // datagrams read from the socket
	Accepted     uint64 // datagrams that verified and were processed
	Rejected     uint64 // datagrams that failed validation (magic, length, HMAC, direction, ...)
	RejectedTag  uint64 // of Rejected: HMAC mismatches, the signature of a wrong key
	Stale        uint64 // verified data datagrams with a non-increasing sequence number (ignored)
	Foreign      uint64 // verified data datagrams from an address other than the bound peer (ignored)
	BadKD        uint64 // verified data datagrams whose KD packet failed to decode
	Sent         uint64 // datagrams written
	Dropped      uint64 // outgoing KD packets dropped because no peer is bound yet
	Overflow     uint64 // incoming KD packets dropped because the reader fell behind
	Handshakes   uint64 // accepted handshakes (each one installs a new data key)
	Pokes        uint64 // pokes sent (target) or received (host)
	LastRejected string // why the latest datagram was rejected
}

// counters is the lock-free form of Stats that the owning goroutine updates and any goroutine may read.
type counters struct {
	received, accepted, rejected, rejectedTag, stale, foreign, badKD atomic.Uint64
	sent, dropped, overflow, handshakes, pokes                       atomic.Uint64
	mu                                                               sync.Mutex
	lastRejected                                                     string
	loggedTag                                                        bool
}

func (c *counters) snapshot() Stats {
	c.mu.Lock()
	last := c.lastRejected
	c.mu.Unlock()
	return Stats{
		Received: c.received.Load(), Accepted: c.accepted.Load(), Rejected: c.rejected.Load(),
		RejectedTag: c.rejectedTag.Load(), Stale: c.stale.Load(), Foreign: c.foreign.Load(), BadKD: c.badKD.Load(),
		Sent: c.sent.Load(), Dropped: c.dropped.Load(), Overflow: c.overflow.Load(),
		Handshakes: c.handshakes.Load(), Pokes: c.pokes.Load(), LastRejected: last,
	}
}

// reject records a rejected datagram. It reports whether this is the first HMAC failure, which the caller
// logs loudly once: a wrong key makes every datagram fail, and one clear message beats a flood.
func (c *counters) reject(err error) (firstTagFailure bool) {
	c.rejected.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastRejected = err.Error()
	if errors.Is(err, ErrTag) {
		c.rejectedTag.Add(1)
		if !c.loggedTag {
			c.loggedTag = true
			return true
		}
	}
	return false
}
