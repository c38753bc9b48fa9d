// Package kdnet is the KDNET transport: KD packets in AES-256-CBC + HMAC-SHA256 UDP datagrams
// (kd-protocol.md §7).
//
// Pieces, each in its own file:
//   - key.go: the `w.x.y.z` key string, the control key it encodes, and key generation (bcdedit style).
//   - datagram.go: sealing and opening one datagram (Keys.Seal, Keys.Open) with typed rejection errors.
//   - handshake.go: the poke and response bodies of the control channel and the data-key derivation.
//   - target.go, host.go, socket.go: UDP transports for both roles that implement kdproto.Transport, so the
//     session state machines of kdproto run over KDNET unchanged. One goroutine owns each socket's state,
//     writes and timers; a pump goroutine only reads.
//   - capture.go, capture_check.go, decode.go: reading pcap/pcapng captures (gzip or not) and turning each
//     UDP datagram into a JSON line (`kdstub kdnet decode`).
//
// The transports hide the handshake: the session above sees KD packets only, starting with the connection
// check pseudo-packet the target sends after each handshake.
package kdnet
