package kdproto

// Dialect selects the packet-id rules of the transport underneath a session. The rest of the state machine
// (ACK wait, retransmit, RESEND/RESET, pending state change) is shared.
type Dialect int

const (
	// DialectKDCOM is KD serial: ids toggle bit 0, the target starts at INITIAL|SYNC, ACKs are compared with
	// the SYNC bit masked, and a duplicate is an id other than the expected one (kd-protocol.md §1.2–§1.3).
	DialectKDCOM Dialect = iota
	// DialectKDNET is KD over KDNET: ids advance by 2, the host starts at 0x80000000, ACKs echo ids exactly,
	// a duplicate is an id not greater than the last accepted one, and RESET carries the next id (§7.6).
	DialectKDNET
)

func (d Dialect) String() string {
	if d == DialectKDNET {
		return "kdnet"
	}
	return "kdcom"
}

// Role says which end of the protocol a session plays.
type Role int

const (
	// RoleTarget is the debuggee (the stub): answers manipulate requests, reports state changes.
	RoleTarget Role = iota
	// RoleHost is the debugger (the built-in client, tests): breaks in, sends requests.
	RoleHost
)

func (r Role) String() string {
	if r == RoleHost {
		return "host"
	}
	return "target"
}

// kdnetDupWindow bounds how far behind the last accepted id a KDNET id counts as a duplicate. A much older id
// means the peer restarted its counter (a new debugger that skipped RESET) and is accepted as a new stream.
const kdnetDupWindow = 0x400

// idState is the packet-id bookkeeping of one session. Only the session loop touches it.
type idState struct {
	dialect Dialect
	role    Role
	local   uint32 // id of the packet in flight, or of the next one sent
	remote  uint32 // KDCOM: the id expected next; KDNET: the smallest id accepted as new
	last    uint32 // last accepted id
	hasLast bool
}

func newIDState(d Dialect, r Role, firstTargetID uint32) idState {
	s := idState{dialect: d, role: r}
	s.restart(firstTargetID)
	return s
}

// restart puts both counters at their initial values (fresh boot / fresh connection).
func (s *idState) restart(firstTargetID uint32) {
	s.hasLast = false
	switch {
	case s.dialect == DialectKDCOM && s.role == RoleTarget:
		s.local, s.remote = InitialPacketID|SyncPacketID, InitialPacketID
	case s.dialect == DialectKDCOM:
		s.local, s.remote = InitialPacketID, InitialPacketID
	case s.role == RoleTarget:
		s.local, s.remote = firstTargetID, 0
	default:
		s.local, s.remote = KDNETHostFirstID, 0
	}
}

// ackMatches reports whether an ACK id acknowledges the packet in flight.
func (s *idState) ackMatches(id uint32) bool {
	if s.dialect == DialectKDCOM {
		return id&^SyncPacketID == s.local&^SyncPacketID
	}
	return id == s.local
}

// advance moves to the next outgoing id after an acknowledged packet.
func (s *idState) advance() {
	if s.dialect == DialectKDCOM {
		s.local = (s.local ^ 1) &^ SyncPacketID
		return
	}
	s.local += 2
	if s.role == RoleHost {
		s.local |= 0x80000000
	}
}

// isDuplicate reports whether an incoming data packet id was already accepted.
func (s *idState) isDuplicate(id uint32) bool {
	if s.hasLast && id == s.last {
		return true
	}
	if s.dialect == DialectKDCOM {
		if id&SyncPacketID != 0 {
			return false // the peer restarted its stream: realign
		}
		return id != s.remote
	}
	return id < s.remote && s.remote-id <= kdnetDupWindow
}

// accept records a new incoming id.
func (s *idState) accept(id uint32) {
	s.last, s.hasLast = id, true
	if s.dialect == DialectKDCOM {
		s.remote = (id &^ SyncPacketID) ^ 1
		return
	}
	s.remote = id + 1
}
