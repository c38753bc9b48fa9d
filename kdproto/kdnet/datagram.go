package kdnet

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Datagram layout constants (kd-protocol.md §7.1).
const (
	Magic        = "MDBG"
	headerSize   = 6  // magic, version, channel
	metadataSize = 8  // BE u64: seq<<8 | dir | pad
	TagSize      = 16 // truncated HMAC-SHA256, also the CBC IV
	blockSize    = aes.BlockSize

	// MinDatagramSize is the smallest well-formed datagram: header, one encrypted block (metadata only), tag.
	MinDatagramSize = headerSize + blockSize + TagSize
	// MaxPayload bounds one datagram's payload: a KD packet header plus PACKET_MAX_SIZE (4000) bytes, with room
	// to spare for control bodies. Larger inputs are rejected before any crypto runs.
	MaxPayload = 8192

	dirHost  = 0x80
	padMask  = 0x0f
	maxSeq   = 1<<56 - 1
	metaMask = 0x70 // bits of the last metadata byte that no known sender sets
)

// Channel is the KDNET channel byte.
type Channel uint8

const (
	ChannelData    Channel = 0 // KD packets, encrypted with the data key
	ChannelControl Channel = 1 // handshake pokes/responses, encrypted with the control key
)

func (c Channel) String() string {
	switch c {
	case ChannelData:
		return "data"
	case ChannelControl:
		return "control"
	}
	return fmt.Sprintf("channel(%d)", uint8(c))
}

// Protocol versions seen in the wild; the data format is identical across them.
const (
	Version2 = 2
	Version4 = 4
	Version5 = 5
	// DefaultVersion is what kdstub's own transports speak when it starts the conversation.
	DefaultVersion = Version5
)

// ValidVersion reports whether v is a KDNET version this package accepts.
func ValidVersion(v uint8) bool { return v == Version2 || v == Version4 || v == Version5 }

// Errors returned (wrapped) by Open; each names one reason a datagram is rejected.
var (
	ErrShort     = errors.New("datagram too short")
	ErrTooLong   = errors.New("datagram too long")
	ErrMagic     = errors.New("bad magic (not KDNET)")
	ErrVersion   = errors.New("unsupported KDNET version")
	ErrChannel   = errors.New("unknown KDNET channel")
	ErrLength    = errors.New("encrypted length is not a multiple of 16")
	ErrTag       = errors.New("HMAC tag mismatch (wrong key, or corrupted datagram)")
	ErrMetadata  = errors.New("bad metadata")
	ErrDirection = errors.New("wrong direction bit")
	ErrNoDataKey = errors.New("no data key yet (no handshake seen)")
)

// Datagram is one decoded KDNET datagram.
type Datagram struct {
	Version  uint8
	Channel  Channel
	Seq      uint64 // 56-bit sequence number
	FromHost bool   // direction bit: set by the debugger
	Pad      uint8  // zero-padding length, as carried in the metadata
	Payload  []byte // a KD packet (data channel) or a handshake body (control channel)
	Tag      [TagSize]byte
}

// Keys holds the cipher state of one KDNET key configuration: the control key and the HMAC key never change,
// the data key changes with every handshake. A Keys value is not safe for concurrent mutation; the transports
// keep it inside the goroutine that owns the socket.
type Keys struct {
	Control ControlKey
	hmacKey [KeySize]byte
	control cipher.Block
	data    cipher.Block
	dataKey [32]byte
}

// NewKeys prepares the ciphers for a control key. The data channel stays closed until SetDataKey.
func NewKeys(k ControlKey) *Keys {
	blk, err := aes.NewCipher(k[:])
	if err != nil { // unreachable: the key is always 32 bytes
		panic(fmt.Sprintf("aes.NewCipher with a 32-byte key: %v", err))
	}
	return &Keys{Control: k, hmacKey: k.HMACKey(), control: blk}
}

// SetDataKey installs the data-channel key derived from a handshake (§7.4).
func (k *Keys) SetDataKey(dk [32]byte) {
	blk, err := aes.NewCipher(dk[:])
	if err != nil {
		panic(fmt.Sprintf("aes.NewCipher with a 32-byte key: %v", err))
	}
	k.data, k.dataKey = blk, dk
}

// DataKey returns the current data key and whether one is set.
func (k *Keys) DataKey() ([32]byte, bool) { return k.dataKey, k.data != nil }

// Clone returns an independent copy (cipher.Blocks are stateless and may be shared).
func (k *Keys) Clone() *Keys { c := *k; return &c }

func (k *Keys) block(ch Channel) (cipher.Block, error) {
	switch ch {
	case ChannelControl:
		return k.control, nil
	case ChannelData:
		if k.data == nil {
			return nil, ErrNoDataKey
		}
		return k.data, nil
	}
	return nil, fmt.Errorf("%w %d", ErrChannel, uint8(ch))
}

// PadLen is the zero padding a payload of n bytes needs so that metadata+payload fill whole AES blocks.
func PadLen(n int) int { return (blockSize - (metadataSize+n)%blockSize) % blockSize }

// Seal encrypts and authenticates d. Tag and Pad in d are ignored: the pad follows from the payload length and
// the tag (which is also the IV) from the plaintext, so sealing a decoded datagram reproduces it byte for byte.
func (k *Keys) Seal(d *Datagram) ([]byte, error) {
	if !ValidVersion(d.Version) {
		return nil, fmt.Errorf("seal: %w %d", ErrVersion, d.Version)
	}
	if d.Seq > maxSeq {
		return nil, fmt.Errorf("seal: sequence number %#x exceeds 56 bits", d.Seq)
	}
	if len(d.Payload) > MaxPayload {
		return nil, fmt.Errorf("seal: %w: payload %d bytes, at most %d", ErrTooLong, len(d.Payload), MaxPayload)
	}
	blk, err := k.block(d.Channel)
	if err != nil {
		return nil, fmt.Errorf("seal %s datagram: %w", d.Channel, err)
	}
	pad := PadLen(len(d.Payload))
	encLen := metadataSize + len(d.Payload) + pad
	out := make([]byte, headerSize+encLen+TagSize)
	copy(out, Magic)
	out[4] = d.Version
	out[5] = uint8(d.Channel)
	meta := d.Seq<<8 | uint64(pad)
	if d.FromHost {
		meta |= dirHost
	}
	binary.BigEndian.PutUint64(out[headerSize:], meta)
	copy(out[headerSize+metadataSize:], d.Payload)
	tag := k.mac(out[:headerSize+encLen])
	copy(out[headerSize+encLen:], tag)
	cbcEncrypt(blk, tag, out[headerSize:headerSize+encLen])
	return out, nil
}

func cbcEncrypt(blk cipher.Block, iv, b []byte) { cipher.NewCBCEncrypter(blk, iv).CryptBlocks(b, b) }

func (k *Keys) mac(b []byte) []byte {
	m := hmac.New(sha256.New, k.hmacKey[:])
	m.Write(b)
	return m.Sum(nil)[:TagSize]
}

// PeekHeader validates the clear-text part of a datagram (magic, version, channel, length) without any crypto.
func PeekHeader(b []byte) (version uint8, ch Channel, err error) {
	if len(b) >= len(Magic) && string(b[:4]) != Magic {
		return 0, 0, fmt.Errorf("%w: % x", ErrMagic, b[:4])
	}
	if len(b) < MinDatagramSize {
		return 0, 0, fmt.Errorf("%w: %d bytes, at least %d", ErrShort, len(b), MinDatagramSize)
	}
	if len(b) > headerSize+metadataSize+MaxPayload+blockSize+TagSize {
		return 0, 0, fmt.Errorf("%w: %d bytes", ErrTooLong, len(b))
	}
	version, ch = b[4], Channel(b[5])
	if !ValidVersion(version) {
		return 0, 0, fmt.Errorf("%w %d", ErrVersion, version)
	}
	if ch != ChannelData && ch != ChannelControl {
		return 0, 0, fmt.Errorf("%w %d", ErrChannel, uint8(ch))
	}
	if n := len(b) - headerSize - TagSize; n%blockSize != 0 {
		return 0, 0, fmt.Errorf("%w: %d bytes", ErrLength, n)
	}
	return version, ch, nil
}

// Open checks and decrypts one datagram. It never panics on hostile input; every rejection wraps one of the
// Err* values above. The direction bit is returned, not checked: use OpenFrom to enforce it.
func (k *Keys) Open(b []byte) (*Datagram, error) {
	version, ch, err := PeekHeader(b)
	if err != nil {
		return nil, err
	}
	blk, err := k.block(ch)
	if err != nil {
		return nil, fmt.Errorf("open %s datagram: %w", ch, err)
	}
	encLen := len(b) - headerSize - TagSize
	var d Datagram
	d.Version, d.Channel = version, ch
	copy(d.Tag[:], b[headerSize+encLen:])
	plain := make([]byte, headerSize+encLen)
	copy(plain, b[:headerSize])
	cipher.NewCBCDecrypter(blk, d.Tag[:]).CryptBlocks(plain[headerSize:], b[headerSize:headerSize+encLen])
	if !hmac.Equal(k.mac(plain), d.Tag[:]) {
		return nil, fmt.Errorf("open %s datagram (%d bytes): %w", ch, len(b), ErrTag)
	}
	meta := binary.BigEndian.Uint64(plain[headerSize:])
	last := uint8(meta)
	if last&metaMask != 0 {
		return nil, fmt.Errorf("%w: reserved bits set in %#02x", ErrMetadata, last)
	}
	d.Seq, d.FromHost, d.Pad = meta>>8, last&dirHost != 0, last&padMask
	n := encLen - metadataSize - int(d.Pad)
	if n < 0 {
		return nil, fmt.Errorf("%w: pad %d exceeds the %d encrypted bytes", ErrMetadata, d.Pad, encLen-metadataSize)
	}
	d.Payload = plain[headerSize+metadataSize : headerSize+metadataSize+n]
	return &d, nil
}

// OpenFrom is Open plus the direction check: a receiver only accepts datagrams sent by its peer.
func (k *Keys) OpenFrom(b []byte, fromHost bool) (*Datagram, error) {
	d, err := k.Open(b)
	if err != nil {
		return nil, err
	}
	if d.FromHost != fromHost {
		return nil, fmt.Errorf("%w: datagram seq %d has from_host=%v", ErrDirection, d.Seq, d.FromHost)
	}
	return d, nil
}
