package kdnet

import (
	"encoding/binary"
	"fmt"
)

// The pcap library trusts the length fields it reads and allocates buffers from them, so a hostile file could
// ask for gigabytes. checkPcap and checkPcapng walk the record/block framing of an in-memory capture first and
// reject any length that points past the data. They check framing only; the library does the parsing.

const (
	pcapFileHeaderSize   = 24
	pcapRecordHeaderSize = 16
	ngByteOrderMagic     = 0x1A2B3C4D
	ngSectionHeader      = 0x0A0D0D0A
	ngEnhancedPacket     = 6
	ngSimplePacket       = 3
	ngObsoletePacket     = 2
	maxCaptureRecords    = maxCaptureFrames
)

// ErrCaptureCorrupt is wrapped by framing errors found before decoding.
var ErrCaptureCorrupt = fmt.Errorf("%w: corrupt framing", ErrCaptureFormat)

func checkPcap(b []byte) error {
	if len(b) < pcapFileHeaderSize {
		return fmt.Errorf("%w: pcap header needs %d bytes, have %d", ErrCaptureCorrupt, pcapFileHeaderSize, len(b))
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if b[0] == 0xa1 {
		bo = binary.BigEndian
	}
	off := pcapFileHeaderSize
	for n := 1; off < len(b); n++ {
		if n > maxCaptureRecords {
			return fmt.Errorf("%w: more than %d records", ErrCaptureCorrupt, maxCaptureRecords)
		}
		if len(b)-off < pcapRecordHeaderSize {
			return nil // a truncated record header: the reader reports it at that frame
		}
		incl := uint64(bo.Uint32(b[off+8:]))
		if incl > uint64(len(b)-off-pcapRecordHeaderSize) {
			return fmt.Errorf("%w: pcap record %d claims %d bytes, only %d left", ErrCaptureCorrupt, n, incl, len(b)-off-pcapRecordHeaderSize)
		}
		off += pcapRecordHeaderSize + int(incl)
	}
	return nil
}

func checkPcapng(b []byte) error {
	var bo binary.ByteOrder = binary.LittleEndian
	off := 0
	for n := 1; off < len(b); n++ {
		if n > maxCaptureRecords {
			return fmt.Errorf("%w: more than %d blocks", ErrCaptureCorrupt, maxCaptureRecords)
		}
		rest := b[off:]
		if len(rest) < 12 {
			return nil // truncated tail: the reader reports it
		}
		typ := binary.LittleEndian.Uint32(rest) // the SHB type is a palindrome; other types follow its order
		if typ == ngSectionHeader {
			switch {
			case binary.LittleEndian.Uint32(rest[8:]) == ngByteOrderMagic:
				bo = binary.LittleEndian
			case binary.BigEndian.Uint32(rest[8:]) == ngByteOrderMagic:
				bo = binary.BigEndian
			default:
				return fmt.Errorf("%w: pcapng block %d: bad byte-order magic", ErrCaptureCorrupt, n)
			}
		} else {
			typ = bo.Uint32(rest)
		}
		blen := uint64(bo.Uint32(rest[4:]))
		if blen < 12 || blen%4 != 0 {
			return fmt.Errorf("%w: pcapng block %d (type %#x) has length %d", ErrCaptureCorrupt, n, typ, blen)
		}
		truncated := blen > uint64(len(rest))
		if truncated {
			// The reader reports the truncation at this frame; the lengths inside must still fit what is there.
			blen = uint64(len(rest)) &^ 3
		}
		var dataLen, room uint64
		switch typ {
		case ngSectionHeader:
			if blen < 28 {
				return fmt.Errorf("%w: pcapng section header %d too short (%d)", ErrCaptureCorrupt, n, blen)
			}
		case ngEnhancedPacket, ngObsoletePacket:
			if blen < 32 {
				return fmt.Errorf("%w: pcapng packet block %d too short (%d)", ErrCaptureCorrupt, n, blen)
			}
			dataLen, room = uint64(bo.Uint32(rest[20:])), blen-32
		case ngSimplePacket:
			if blen < 16 {
				return fmt.Errorf("%w: pcapng simple packet block %d too short (%d)", ErrCaptureCorrupt, n, blen)
			}
			dataLen, room = uint64(bo.Uint32(rest[8:])), blen-16
		}
		if dataLen > room {
			return fmt.Errorf("%w: pcapng block %d claims %d packet bytes in a %d-byte block", ErrCaptureCorrupt, n, dataLen, blen)
		}
		if truncated {
			return nil
		}
		off += int(blen)
	}
	return nil
}
