// Package kdproto is the KD wire protocol: packets and the structures they carry, KD serial framing, KDNET,
// and the session state machines of both roles. It knows nothing about QEMU or Windows internals.
//
// # Layers
//
//   - Packets: Packet is one KD_PACKET. DecodePacket / Packet.MarshalBinary handle the form carried in a KDNET
//     datagram (header + payload, no trailer; plus the 12-byte connection check and the break-in byte).
//     kdproto/serial frames the same packets for a byte stream (leader hunt, 0xAA trailer).
//   - Bodies: Packet.Body decodes the payload into *Manipulate (DBGKD_MANIPULATE_STATE64 with its per-API
//     union member), *StateChange (DBGKD_ANY_WAIT_STATE_CHANGE for AMD64), *DebugIO, *TraceIO, *FileIO or
//     *ControlRequest; EncodeBody is the inverse. Context (AMD64 CONTEXT) and KSpecialRegisters travel as
//     trailing data of GetContext/SetContext and control-space requests. Every structure mirrors the
//     reference layout field by field and keeps padding and junk bytes, so decode followed by encode
//     reproduces the input exactly. Decoders never panic: short or inconsistent input gives a *ShortError or
//     *MalformedError (errors.Is ErrShort / ErrMalformed).
//   - Transports: anything implementing Transport. A transport reports a packet it had to discard (bad
//     checksum, bad trailer, oversize) as an error wrapping ErrCorruptPacket; the session answers it with
//     RESEND and keeps reading. Any other read error ends the session.
//   - Sessions: Session is the reliable layer (ids, ACK wait, retransmission, RESEND/RESET, duplicates,
//     pending state change), one implementation for both roles and both id dialects (DialectKDCOM,
//     DialectKDNET). TargetSession (the stub) exposes Requests, BreakIns, Respond, SendStateChange,
//     ClearPending, Print; HostSession (the built-in client, tests) exposes Reset, BreakIn, Request,
//     WaitStateChange. A Server that answers requests from a debugger target sits on TargetSession; a Client
//     with high-level commands sits on HostSession.
//
// # Concurrency
//
// A session's Run owns it: one goroutine reads the transport and hands packets to the session loop, which
// alone changes state, writes to the transport and runs the session's single timer. Public methods send work
// to the loop and are safe for concurrent use; every blocking call takes a context.Context.
//
// kdproto/kdtest has an in-memory Transport pair, a lossy shim, a memory-backed target and a scripted host
// scenario that any transport can be checked with.
package kdproto
