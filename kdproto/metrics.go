package kdproto

import "sync/atomic"

// Metrics counts what a session saw and did; the snapshot is safe to read while the session runs.
type Metrics struct {
	Sent            uint64 // data packets sent for the first time
	Acked           uint64 // data packets acknowledged by an ACK
	ImplicitAcks    uint64 // data packets taken as delivered because the peer moved on (see Session)
	Retransmits     uint64 // data packets sent again (timer, RESEND or RESET)
	GaveUp          uint64 // data packets dropped after MaxTries transmissions
	Received        uint64 // new data packets delivered to the consumer
	Duplicates      uint64 // data packets ACKed again but not delivered
	BadPackets      uint64 // corrupt packets reported by the transport (answered with RESEND)
	BadBodies       uint64 // data packets whose body failed to decode (ACKed, not delivered)
	Dropped         uint64 // packets dropped because a queue was full (the peer retransmits)
	StrayAcks       uint64 // ACKs that matched nothing in flight
	ResendsSent     uint64
	ResendsReceived uint64
	ResetsSent      uint64
	ResetsReceived  uint64
	BreakIns        uint64 // break-in requests received (target) or sent (host)
}

// counters is the live, atomically updated form of Metrics.
type counters struct {
	sent, acked, implicitAcks, retransmits, gaveUp, received, duplicates, badPackets, badBodies,
	dropped, strayAcks, resendsSent, resendsReceived, resetsSent, resetsReceived, breakIns atomic.Uint64
}

func (c *counters) snapshot() Metrics {
	return Metrics{
		Sent: c.sent.Load(), Acked: c.acked.Load(), ImplicitAcks: c.implicitAcks.Load(),
		Retransmits: c.retransmits.Load(), GaveUp: c.gaveUp.Load(), Received: c.received.Load(),
		Duplicates: c.duplicates.Load(), BadPackets: c.badPackets.Load(), BadBodies: c.badBodies.Load(),
		Dropped: c.dropped.Load(), StrayAcks: c.strayAcks.Load(), ResendsSent: c.resendsSent.Load(),
		ResendsReceived: c.resendsReceived.Load(), ResetsSent: c.resetsSent.Load(),
		ResetsReceived: c.resetsReceived.Load(), BreakIns: c.breakIns.Load(),
	}
}
