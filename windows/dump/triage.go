package dump

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// TriageHeader is TRIAGE_DUMP64, the header at 0x2000 of a triage dump (rizin dmp64_triage). Offsets are
// absolute file offsets.
type TriageHeader struct {
	ServicePackBuild      uint32
	SizeOfDump            uint32
	ValidOffset           uint32
	ContextOffset         uint32
	ExceptionOffset       uint32
	MmOffset              uint32
	UnloadedDriversOffset uint32
	PrcbOffset            uint32 // copy of the crashing CPU's KPRCB
	ProcessOffset         uint32 // copy of the crashing thread's EPROCESS
	ThreadOffset          uint32 // copy of the crashing ETHREAD
	CallStackOffset       uint32
	SizeOfCallStack       uint32
	DriverListOffset      uint32 // DriverCount entries of 0x90 bytes
	DriverCount           uint32
	StringPoolOffset      uint32
	StringPoolSize        uint32
	BrokenDriverOffset    uint32
	TriageOptions         uint32
	TopOfStack            uint64 // VA of the first call-stack byte
	BStoreOffset          uint32 // IA64 only
	SizeOfBStore          uint32
	LimitOfBStore         uint64
	DataPageAddress       uint64
	DataPageOffset        uint32
	DataPageSize          uint32
	DebuggerDataOffset    uint32 // decoded KDBG copy
	DebuggerDataSize      uint32
	DataBlocksOffset      uint32 // DataBlocksCount 16-byte {VA u64, offset u32, size u32} records
	DataBlocksCount       uint32
}

const triageHeaderSize = 0x80

// Triage dump record sizes.
const (
	driverEntrySize   = 0x90 // u32 name offset, u32 pad, first 0x88 bytes of the KLDR entry
	driverLdrOffset   = 8
	dataBlockSize     = 16
	maxDrivers        = 1 << 16
	maxDataBlocks     = 1 << 20
	maxNameChars      = 32767 // a UNICODE_STRING cannot hold more
	maxStructCopySize = 1 << 20
	maxNameBudget     = 16 << 20 // bytes of UTF-16 decoded for all driver names together
)

// Block is a VA-tagged piece of a triage dump.
type Block struct {
	VA         uint64 // 0 when the dump does not say (and it cannot be derived)
	FileOffset uint32
	Data       []byte // nil when the dump lacks the piece
}

// Present reports whether the dump holds the block.
func (b Block) Present() bool { return len(b.Data) > 0 }

// DataBlock is one triage data-block record: Size bytes of guest VA space copied at FileOffset.
type DataBlock struct {
	VA         uint64
	FileOffset uint32
	Size       uint32
}

// UnicodeString is an x64 UNICODE_STRING as stored in a KLDR entry.
type UnicodeString struct {
	Length        uint16
	MaximumLength uint16
	Buffer        uint64
}

// Driver is one triage driver-list entry: the name from the string pool and the KLDR_DATA_TABLE_ENTRY
// fields the triage writer keeps (it zeroes the list links and the name strings).
type Driver struct {
	Name          string // e.g. `\SystemRoot\system32\ntoskrnl.exe`
	DllBase       uint64
	EntryPoint    uint64
	SizeOfImage   uint32
	FullDllName   UnicodeString
	BaseDllName   UnicodeString
	Flags         uint32
	LoadCount     uint16
	CheckSum      uint32
	TimeDateStamp uint32
	// Raw is the 0x88-byte KLDR_DATA_TABLE_ENTRY prefix as stored.
	Raw []byte
}

// KLDR prefix offsets inside a triage driver entry. The triage copy follows the older 0x88-byte layout in
// which CheckSum sits at 0x78 and TimeDateStamp at 0x80 (checked against the PE headers in the real dump).
const (
	kldrDllBase       = 0x30
	kldrEntryPoint    = 0x38
	kldrSizeOfImage   = 0x40
	kldrFullDllName   = 0x48
	kldrBaseDllName   = 0x58
	kldrFlags         = 0x68
	kldrLoadCount     = 0x6C
	kldrCheckSum      = 0x78
	kldrTimeDateStamp = 0x80
	kldrPrefixSize    = 0x88
)

// KDDEBUGGER_DATA64 fields used to locate the structure copies (windows-internals.md §4.2).
const (
	kdbgSize                    = 0x14
	kdbgKiProcessorBlock        = 0x218
	kdbgOffsetKThreadApcProcess = 0x2A0
	kdbgSizeEProcess            = 0x2A8
	kdbgSizePrcb                = 0x2B0
	kdbgOffsetPrcbCurrentThread = 0x2B4
	kdbgOffsetPrcbNumber        = 0x2BE
	kdbgSizeEThread             = 0x2C0
)

// Triage holds the decoded extras of a triage dump. Byte slices are copies owned by the caller.
type Triage struct {
	Header TriageHeader
	// KDBG is the decoded KDDEBUGGER_DATA64 copy; its VA is DUMP_HEADER64.KdDebuggerDataBlock.
	KDBG Block
	// Prcb is the crashing CPU's KPRCB; VA from KiProcessorBlock[Prcb.Number] (read through the data blocks).
	Prcb Block
	// Process is the crashing thread's EPROCESS (System, pid 4, in the shared 19041 dump); VA from the
	// thread's ApcState.Process (KDBG OffsetKThreadApcProcess).
	Process Block
	// Thread is the crashing ETHREAD; VA from KPRCB.CurrentThread.
	Thread Block
	// CallStack is the saved kernel stack; VA is TopOfStack.
	CallStack Block
	// DataPage is the optional extra page (TRIAGE_DUMP64.DataPage*).
	DataPage   Block
	Drivers    []Driver
	DataBlocks []DataBlock
}

// Triage returns the triage extras, or an error wrapping ErrUnsupported for other dump types.
func (d *File) Triage() (*Triage, error) {
	if d.tri == nil {
		return nil, fmt.Errorf("triage data of a %s dump: %w", d.hdr.DumpType, ErrUnsupported)
	}
	t := *d.tri
	for _, b := range []*Block{&t.KDBG, &t.Prcb, &t.Process, &t.Thread, &t.CallStack, &t.DataPage} {
		b.Data = slices.Clone(b.Data)
	}
	t.Drivers = slices.Clone(t.Drivers)
	for i := range t.Drivers {
		t.Drivers[i].Raw = slices.Clone(t.Drivers[i].Raw)
	}
	t.DataBlocks = slices.Clone(t.DataBlocks)
	return &t, nil
}

func decodeTriageHeader(b []byte) TriageHeader {
	le := binary.LittleEndian
	u := func(off int) uint32 { return le.Uint32(b[off:]) }
	return TriageHeader{
		ServicePackBuild: u(0x00), SizeOfDump: u(0x04), ValidOffset: u(0x08), ContextOffset: u(0x0C),
		ExceptionOffset: u(0x10), MmOffset: u(0x14), UnloadedDriversOffset: u(0x18), PrcbOffset: u(0x1C),
		ProcessOffset: u(0x20), ThreadOffset: u(0x24), CallStackOffset: u(0x28), SizeOfCallStack: u(0x2C),
		DriverListOffset: u(0x30), DriverCount: u(0x34), StringPoolOffset: u(0x38), StringPoolSize: u(0x3C),
		BrokenDriverOffset: u(0x40), TriageOptions: u(0x44), TopOfStack: le.Uint64(b[0x48:]),
		BStoreOffset: u(0x50), SizeOfBStore: u(0x54), LimitOfBStore: le.Uint64(b[0x58:]),
		DataPageAddress: le.Uint64(b[0x60:]), DataPageOffset: u(0x68), DataPageSize: u(0x6C),
		DebuggerDataOffset: u(0x70), DebuggerDataSize: u(0x74), DataBlocksOffset: u(0x78), DataBlocksCount: u(0x7C),
	}
}

// initTriage decodes the triage header and its pieces. Individual pieces with out-of-range offsets are
// left absent rather than failing the whole dump; only a missing triage header is fatal.
func (d *File) initTriage() error {
	raw := make([]byte, triageHeaderSize)
	if err := readFull(d.r, raw, HeaderSize); err != nil {
		return fmt.Errorf("read triage header: %w", err)
	}
	th := decodeTriageHeader(raw)
	t := &Triage{Header: th}
	d.tri = t

	t.KDBG = d.block(d.hdr.KdDebuggerDataBlock, th.DebuggerDataOffset, uint64(th.DebuggerDataSize))
	kdbg := t.KDBG.Data
	kdbgU16 := func(off int) uint64 {
		if len(kdbg) < off+2 || uint64(off+2) > uint64(kdbgDeclaredSize(kdbg)) {
			return 0
		}
		return uint64(binary.LittleEndian.Uint16(kdbg[off:]))
	}

	// Structure copies: sized by the KDBG's Size* fields, never past the next piece of the dump.
	t.Prcb = d.block(0, th.PrcbOffset, d.copySize(th.PrcbOffset, kdbgU16(kdbgSizePrcb)))
	t.Process = d.block(0, th.ProcessOffset, d.copySize(th.ProcessOffset, kdbgU16(kdbgSizeEProcess)))
	t.Thread = d.block(0, th.ThreadOffset, d.copySize(th.ThreadOffset, kdbgU16(kdbgSizeEThread)))
	t.CallStack = d.block(th.TopOfStack, th.CallStackOffset, uint64(th.SizeOfCallStack))
	t.DataPage = d.block(th.DataPageAddress, th.DataPageOffset, uint64(th.DataPageSize))

	t.DataBlocks = d.readDataBlocks(th)
	d.virt.blocks = normalizeBlocks(t.DataBlocks, d.size)

	// Derive the copies' VAs: KPRCB → CurrentThread → ApcState.Process, and KiProcessorBlock[Number] for
	// the KPRCB itself (read from the data blocks, which hold KiProcessorBlock in real triage dumps).
	if p := t.Prcb.Data; p != nil {
		curOff := kdbgU16(kdbgOffsetPrcbCurrentThread)
		if curOff == 0 {
			curOff = 0x8 // KPRCB.CurrentThread on every x64 build
		}
		if curOff+8 <= uint64(len(p)) {
			t.Thread.VA = binary.LittleEndian.Uint64(p[curOff:])
		}
		numOff := kdbgU16(kdbgOffsetPrcbNumber)
		if numOff == 0 {
			numOff = 0x24
		}
		if kpb := kdbgU64(kdbg, kdbgKiProcessorBlock); kpb != 0 && numOff+2 <= uint64(len(p)) {
			num := uint64(binary.LittleEndian.Uint16(p[numOff:]))
			var ptr [8]byte
			if err := d.virt.readBlocks(d.r, kpb+8*num, ptr[:]); err == nil {
				t.Prcb.VA = binary.LittleEndian.Uint64(ptr[:])
			}
		}
	}
	if th := t.Thread.Data; th != nil {
		if off := kdbgU16(kdbgOffsetKThreadApcProcess); off != 0 && off+8 <= uint64(len(th)) {
			t.Process.VA = binary.LittleEndian.Uint64(th[off:])
		}
	}
	d.virt.copies = nil
	for _, b := range []Block{t.KDBG, t.Prcb, t.Process, t.Thread, t.CallStack, t.DataPage} {
		if b.Present() && b.VA != 0 && b.VA+uint64(len(b.Data)) > b.VA {
			d.virt.copies = append(d.virt.copies, b)
		}
	}
	t.Drivers = d.readDrivers(th)
	return nil
}

// kdbgDeclaredSize is the KDBG header's Size field, bounding which fields exist.
func kdbgDeclaredSize(kdbg []byte) uint32 {
	if len(kdbg) < kdbgSize+4 {
		return 0
	}
	return binary.LittleEndian.Uint32(kdbg[kdbgSize:])
}

func kdbgU64(kdbg []byte, off int) uint64 {
	if len(kdbg) < off+8 || uint64(off+8) > uint64(kdbgDeclaredSize(kdbg)) {
		return 0
	}
	return binary.LittleEndian.Uint64(kdbg[off:])
}

// block reads size bytes at off when they lie inside the file; otherwise it returns an absent block.
func (d *File) block(va uint64, off uint32, size uint64) Block {
	if off == 0 || size == 0 || uint64(off) < HeaderSize {
		return Block{}
	}
	size = min(size, maxStructCopySize)
	if uint64(off)+size > uint64(d.size) {
		return Block{}
	}
	buf := make([]byte, size)
	if err := readFull(d.r, buf, int64(off)); err != nil {
		return Block{}
	}
	return Block{VA: va, FileOffset: off, Data: buf}
}

// copySize picks the size of a structure copy: the KDBG's value when known, else up to the next known
// piece of the triage dump.
func (d *File) copySize(off uint32, fromKDBG uint64) uint64 {
	if off == 0 {
		return 0
	}
	next := uint64(d.size)
	th := d.tri.Header
	for _, o := range []uint32{th.ContextOffset, th.ExceptionOffset, th.MmOffset, th.UnloadedDriversOffset,
		th.PrcbOffset, th.ProcessOffset, th.ThreadOffset, th.CallStackOffset, th.DriverListOffset,
		th.StringPoolOffset, th.BrokenDriverOffset, th.DataPageOffset, th.DebuggerDataOffset, th.DataBlocksOffset} {
		if o > off && uint64(o) < next {
			next = uint64(o)
		}
	}
	if next <= uint64(off) {
		return 0
	}
	limit := next - uint64(off)
	if fromKDBG != 0 {
		return min(fromKDBG, limit)
	}
	return min(limit, maxStructCopySize)
}

func (d *File) readDataBlocks(th TriageHeader) []DataBlock {
	off := uint64(th.DataBlocksOffset)
	if off < HeaderSize || off >= uint64(d.size) {
		return nil
	}
	n := min(uint64(th.DataBlocksCount), (uint64(d.size)-off)/dataBlockSize, maxDataBlocks)
	if n == 0 {
		return nil
	}
	raw := make([]byte, n*dataBlockSize)
	if err := readFull(d.r, raw, int64(off)); err != nil {
		return nil
	}
	out := make([]DataBlock, n)
	for i := range out {
		r := raw[i*dataBlockSize:]
		out[i] = DataBlock{VA: le64(r), FileOffset: le32(r[8:]), Size: le32(r[12:])}
	}
	return out
}

func (d *File) readDrivers(th TriageHeader) []Driver {
	off := uint64(th.DriverListOffset)
	if off < HeaderSize || off >= uint64(d.size) {
		return nil
	}
	n := min(uint64(th.DriverCount), (uint64(d.size)-off)/driverEntrySize, maxDrivers)
	if n == 0 {
		return nil
	}
	raw := make([]byte, n*driverEntrySize)
	if err := readFull(d.r, raw, int64(off)); err != nil {
		return nil
	}
	out := make([]Driver, n)
	// Names may share or overlap pool entries, so hostile offsets could make n entries decode n long strings
	// each; a total budget (and a cache per offset) keeps that linear in the file size.
	budget := min(uint64(d.size), maxNameBudget)
	names := map[uint32]string{}
	for i := range out {
		e := raw[i*driverEntrySize : (i+1)*driverEntrySize]
		k := e[driverLdrOffset : driverLdrOffset+kldrPrefixSize]
		nameOff := le32(e)
		name, ok := names[nameOff]
		if !ok && budget > 0 {
			name = d.poolString(nameOff, &budget)
			names[nameOff] = name
		}
		out[i] = Driver{
			Name:          name,
			DllBase:       le64(k[kldrDllBase:]),
			EntryPoint:    le64(k[kldrEntryPoint:]),
			SizeOfImage:   le32(k[kldrSizeOfImage:]),
			FullDllName:   decodeUnicodeString(k[kldrFullDllName:]),
			BaseDllName:   decodeUnicodeString(k[kldrBaseDllName:]),
			Flags:         le32(k[kldrFlags:]),
			LoadCount:     binary.LittleEndian.Uint16(k[kldrLoadCount:]),
			CheckSum:      le32(k[kldrCheckSum:]),
			TimeDateStamp: le32(k[kldrTimeDateStamp:]),
			Raw:           slices.Clone(k),
		}
	}
	return out
}

// poolString reads a string-pool entry at absolute file offset off: a u32 character count, then UTF-16.
// It returns "" when the entry does not fit in the file or in the remaining byte budget.
func (d *File) poolString(off uint32, budget *uint64) string {
	if uint64(off) < HeaderSize || uint64(off)+4 > uint64(d.size) {
		return ""
	}
	var cnt [4]byte
	if err := readFull(d.r, cnt[:], int64(off)); err != nil {
		return ""
	}
	n := uint64(le32(cnt[:]))
	if n > maxNameChars || uint64(off)+4+2*n > uint64(d.size) || 2*n > *budget {
		return ""
	}
	*budget -= 2 * n
	buf := make([]byte, 2*n)
	if err := readFull(d.r, buf, int64(off)+4); err != nil {
		return ""
	}
	return decodeUTF16(buf)
}

func decodeUnicodeString(b []byte) UnicodeString {
	return UnicodeString{
		Length:        binary.LittleEndian.Uint16(b),
		MaximumLength: binary.LittleEndian.Uint16(b[2:]),
		Buffer:        le64(b[8:]),
	}
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
