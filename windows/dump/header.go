package dump

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf16"
)

// HeaderSize is the size of DUMP_HEADER64; the triage header or the bitmap header follows it.
const HeaderSize = 0x2000

// PageSize is the x64 small page size every physical dump layout is built from.
const PageSize = 0x1000

// Signatures at offset 0 and 4 of the header.
const (
	sigPAGE = "PAGE"
	sigDU64 = "DU64"
	sigDUMP = "DUMP" // "PAGEDUMP": the 32-bit header
)

// unsetFill is what Windows writes into header fields it leaves undefined ("PAGE" repeated). A 32-bit read
// of it is 0x45474150.
const unsetFill = 0x45474150

// DUMP_HEADER64 field offsets (rizin dmp_specs.h dmp64_header; kdmp-parser HEADER64).
const (
	offMajorVersion        = 0x008
	offMinorVersion        = 0x00C
	offDirectoryTableBase  = 0x010
	offPfnDataBase         = 0x018
	offPsLoadedModuleList  = 0x020
	offPsActiveProcessHead = 0x028
	offMachineImageType    = 0x030
	offNumberProcessors    = 0x034
	offBugCheckCode        = 0x038
	offBugCheckParameters  = 0x040 // 4 × u64
	offKdDebuggerDataBlock = 0x080
	offPhysicalMemoryBlock = 0x088 // PHYSICAL_MEMORY_DESCRIPTOR64: NumberOfRuns u32, pad, NumberOfPages u64, Run[]
	offPhysicalMemoryRuns  = 0x098 // Run[0]: BasePage u64, PageCount u64
	offContextRecord       = 0x348 // 3000-byte buffer; the x64 CONTEXT uses the first 0x4D0
	offException           = 0xF00 // EXCEPTION_RECORD64, 0x98 bytes
	offDumpType            = 0xF98
	offRequiredDumpSpace   = 0xFA0
	offSystemTime          = 0xFA8
	offComment             = 0xFB0 // 128 bytes
	offSystemUpTime        = 0x1030
	offMiniDumpFields      = 0x1038
	offSecondaryDataState  = 0x103C
	offProductType         = 0x1040
	offSuiteMask           = 0x1044
	offWriterStatus        = 0x1048
	offKdSecondaryVersion  = 0x104D
	offAttributes          = 0x1050
	offBootID              = 0x1054

	contextBufferSize = 3000
	commentSize       = 128
	// MaxRuns is how many PHYSICAL_MEMORY_RUN64 entries fit between Run[0] and the context record.
	MaxRuns = (offContextRecord - offPhysicalMemoryRuns) / 16
)

// ContextSize is the size of the x64 CONTEXT record kept from the header's context buffer.
const ContextSize = 0x4D0

// DumpType is DUMP_HEADER64.DumpType.
type DumpType uint32

// Dump types (dbgeng names as kdmp-parser lists them; rizin calls 5 and 6 "bitmap full" and "bitmap kernel",
// but Windows writes 5 for both kinds and tells them apart by the bitmap signature).
const (
	TypeFull         DumpType = 1  // complete memory dump: pages follow the header in run order
	TypeKernel       DumpType = 2  // kernel ("summary") dump: SDMP bitmap at 0x2000
	TypeHeaderOnly   DumpType = 3  // header only, no memory
	TypeTriage       DumpType = 4  // triage (small memory) dump
	TypeBitmap       DumpType = 5  // bitmap dump: "FDMP" (complete memory) or "SDMP" (kernel memory) bitmap at 0x2000
	TypeLiveKernel   DumpType = 6  // live kernel dump (Task Manager, 22H2+): bitmap layout like TypeBitmap
	TypeKernelRDMP   DumpType = 8  // `.dump /k` on Windows 11 ("RDMP" layout, not decoded here)
	TypeKernelUser   DumpType = 9  // `.dump /ka` ("RDMP", not decoded)
	TypeCompleteRDMP DumpType = 10 // `.dump /f` ("RDMP" full, not decoded)
)

func (t DumpType) String() string {
	switch t {
	case TypeFull:
		return "full"
	case TypeKernel:
		return "kernel"
	case TypeHeaderOnly:
		return "header-only"
	case TypeTriage:
		return "triage"
	case TypeBitmap:
		return "bitmap"
	case TypeLiveKernel:
		return "live-kernel"
	case TypeKernelRDMP:
		return "kernel-rdmp"
	case TypeKernelUser:
		return "kernel-user-rdmp"
	case TypeCompleteRDMP:
		return "complete-rdmp"
	}
	return fmt.Sprintf("DumpType(%#x)", uint32(t))
}

// Run is one PHYSICAL_MEMORY_RUN64: PageCount pages starting at page frame BasePage.
type Run struct {
	BasePage  uint64
	PageCount uint64
}

// ExceptionRecord is the header's EXCEPTION_RECORD64 (0x98 bytes at 0xF00).
type ExceptionRecord struct {
	Code             uint32
	Flags            uint32
	Record           uint64
	Address          uint64
	NumberParameters uint32
	Information      [15]uint64
}

// Header is the decoded DUMP_HEADER64. Fields Windows left undefined read as the "PAGE" fill pattern
// (0x45474150 per 32-bit word); PhysicalMemoryValid says whether the run list was filled in.
type Header struct {
	MajorVersion        uint32 // 0xF for free builds, 0xC for checked
	MinorVersion        uint32 // the build number, e.g. 0x4A61 = 19041
	DTB                 uint64 // DirectoryTableBase: the kernel CR3 at crash time
	PfnDataBase         uint64
	PsLoadedModuleList  uint64
	PsActiveProcessHead uint64
	MachineImageType    uint32 // 0x8664 for x64
	NumberProcessors    uint32
	BugCheckCode        uint32
	BugCheckParameters  [4]uint64
	KdDebuggerDataBlock uint64 // VA of the KDBG

	// PhysicalMemoryValid is false when the descriptor holds the "PAGE" fill (triage dumps).
	PhysicalMemoryValid bool
	NumberOfPages       uint64
	Runs                []Run // at most MaxRuns

	// Context is the crashing CPU's x64 CONTEXT record (ContextSize bytes; see Registers).
	Context   []byte
	Exception ExceptionRecord

	DumpType           DumpType
	RequiredDumpSpace  uint64 // total file size the writer reserved
	SystemTime         uint64 // FILETIME (100 ns since 1601-01-01 UTC); see Time
	Comment            string // NUL-terminated ASCII comment, "" when unset
	SystemUpTime       uint64 // 100 ns units
	MiniDumpFields     uint32
	SecondaryDataState uint32
	ProductType        uint32
	SuiteMask          uint32
	WriterStatus       uint32
	KdSecondaryVersion uint8
	Attributes         uint32
	BootID             uint32
}

// Time converts SystemTime (a FILETIME) to a time.Time; the zero Time when unset.
func (h *Header) Time() time.Time {
	if h.SystemTime == 0 || h.SystemTime == unsetFill|unsetFill<<32 {
		return time.Time{}
	}
	const epochDelta = 116444736000000000 // 100 ns intervals from 1601-01-01 to 1970-01-01
	t := int64(h.SystemTime) - epochDelta
	return time.Unix(t/1e7, (t%1e7)*100).UTC()
}

// decodeHeader parses the 0x2000-byte DUMP_HEADER64 in b.
func decodeHeader(b []byte) (*Header, error) {
	if len(b) < HeaderSize {
		return nil, formatErr("header is %d bytes, need %#x", len(b), HeaderSize)
	}
	if string(b[0:4]) != sigPAGE {
		return nil, formatErr("signature %q is not %q", b[0:4], sigPAGE)
	}
	switch string(b[4:8]) {
	case sigDU64:
	case sigDUMP:
		return nil, fmt.Errorf("32-bit PAGEDUMP header: %w", ErrUnsupported)
	default:
		return nil, formatErr("valid-dump tag %q is not %q", b[4:8], sigDU64)
	}
	le := binary.LittleEndian
	h := &Header{
		MajorVersion:        le.Uint32(b[offMajorVersion:]),
		MinorVersion:        le.Uint32(b[offMinorVersion:]),
		DTB:                 le.Uint64(b[offDirectoryTableBase:]),
		PfnDataBase:         le.Uint64(b[offPfnDataBase:]),
		PsLoadedModuleList:  le.Uint64(b[offPsLoadedModuleList:]),
		PsActiveProcessHead: le.Uint64(b[offPsActiveProcessHead:]),
		MachineImageType:    le.Uint32(b[offMachineImageType:]),
		NumberProcessors:    le.Uint32(b[offNumberProcessors:]),
		BugCheckCode:        le.Uint32(b[offBugCheckCode:]),
		KdDebuggerDataBlock: le.Uint64(b[offKdDebuggerDataBlock:]),
		Context:             bytes.Clone(b[offContextRecord : offContextRecord+ContextSize]),
		DumpType:            DumpType(le.Uint32(b[offDumpType:])),
		RequiredDumpSpace:   le.Uint64(b[offRequiredDumpSpace:]),
		SystemTime:          le.Uint64(b[offSystemTime:]),
		Comment:             decodeComment(b[offComment : offComment+commentSize]),
		SystemUpTime:        le.Uint64(b[offSystemUpTime:]),
		MiniDumpFields:      le.Uint32(b[offMiniDumpFields:]),
		SecondaryDataState:  le.Uint32(b[offSecondaryDataState:]),
		ProductType:         le.Uint32(b[offProductType:]),
		SuiteMask:           le.Uint32(b[offSuiteMask:]),
		WriterStatus:        le.Uint32(b[offWriterStatus:]),
		KdSecondaryVersion:  b[offKdSecondaryVersion],
		Attributes:          le.Uint32(b[offAttributes:]),
		BootID:              le.Uint32(b[offBootID:]),
	}
	for i := range h.BugCheckParameters {
		h.BugCheckParameters[i] = le.Uint64(b[offBugCheckParameters+8*i:])
	}
	e := b[offException:]
	h.Exception = ExceptionRecord{
		Code:             le.Uint32(e[0x00:]),
		Flags:            le.Uint32(e[0x04:]),
		Record:           le.Uint64(e[0x08:]),
		Address:          le.Uint64(e[0x10:]),
		NumberParameters: le.Uint32(e[0x18:]),
	}
	for i := range h.Exception.Information {
		h.Exception.Information[i] = le.Uint64(e[0x20+8*i:])
	}
	nruns := le.Uint32(b[offPhysicalMemoryBlock:])
	if nruns != unsetFill {
		if nruns > MaxRuns {
			return nil, formatErr("physical memory descriptor claims %d runs, at most %d fit", nruns, MaxRuns)
		}
		h.PhysicalMemoryValid = true
		h.NumberOfPages = le.Uint64(b[offPhysicalMemoryBlock+8:])
		h.Runs = make([]Run, nruns)
		for i := range h.Runs {
			r := b[offPhysicalMemoryRuns+16*i:]
			h.Runs[i] = Run{BasePage: le.Uint64(r), PageCount: le.Uint64(r[8:])}
		}
	}
	return h, nil
}

// encode renders h as a 0x2000-byte DUMP_HEADER64, undefined fields filled with "PAGE" as Windows does.
func (h *Header) encode() ([]byte, error) {
	if len(h.Runs) > MaxRuns {
		return nil, fmt.Errorf("encode header: %d runs, at most %d fit", len(h.Runs), MaxRuns)
	}
	if len(h.Context) > contextBufferSize {
		return nil, fmt.Errorf("encode header: context is %d bytes, at most %d fit", len(h.Context), contextBufferSize)
	}
	if len(h.Comment) >= commentSize {
		return nil, fmt.Errorf("encode header: comment is %d bytes, at most %d fit", len(h.Comment), commentSize-1)
	}
	b := bytes.Repeat([]byte(sigPAGE), HeaderSize/4)
	copy(b[4:], sigDU64)
	le := binary.LittleEndian
	le.PutUint32(b[offMajorVersion:], h.MajorVersion)
	le.PutUint32(b[offMinorVersion:], h.MinorVersion)
	le.PutUint64(b[offDirectoryTableBase:], h.DTB)
	le.PutUint64(b[offPfnDataBase:], h.PfnDataBase)
	le.PutUint64(b[offPsLoadedModuleList:], h.PsLoadedModuleList)
	le.PutUint64(b[offPsActiveProcessHead:], h.PsActiveProcessHead)
	le.PutUint32(b[offMachineImageType:], h.MachineImageType)
	le.PutUint32(b[offNumberProcessors:], h.NumberProcessors)
	le.PutUint32(b[offBugCheckCode:], h.BugCheckCode)
	for i, p := range h.BugCheckParameters {
		le.PutUint64(b[offBugCheckParameters+8*i:], p)
	}
	le.PutUint64(b[offKdDebuggerDataBlock:], h.KdDebuggerDataBlock)
	if h.PhysicalMemoryValid {
		le.PutUint32(b[offPhysicalMemoryBlock:], uint32(len(h.Runs)))
		le.PutUint32(b[offPhysicalMemoryBlock+4:], 0)
		le.PutUint64(b[offPhysicalMemoryBlock+8:], h.NumberOfPages)
		for i, r := range h.Runs {
			le.PutUint64(b[offPhysicalMemoryRuns+16*i:], r.BasePage)
			le.PutUint64(b[offPhysicalMemoryRuns+16*i+8:], r.PageCount)
		}
	}
	if h.Context != nil {
		ctx := b[offContextRecord : offContextRecord+contextBufferSize]
		clear(ctx)
		copy(ctx, h.Context)
	}
	e := b[offException : offException+0x98]
	clear(e)
	le.PutUint32(e[0x00:], h.Exception.Code)
	le.PutUint32(e[0x04:], h.Exception.Flags)
	le.PutUint64(e[0x08:], h.Exception.Record)
	le.PutUint64(e[0x10:], h.Exception.Address)
	le.PutUint32(e[0x18:], h.Exception.NumberParameters)
	for i, v := range h.Exception.Information {
		le.PutUint64(e[0x20+8*i:], v)
	}
	le.PutUint32(b[offDumpType:], uint32(h.DumpType))
	le.PutUint64(b[offRequiredDumpSpace:], h.RequiredDumpSpace)
	le.PutUint64(b[offSystemTime:], h.SystemTime)
	c := b[offComment : offComment+commentSize]
	clear(c)
	copy(c, h.Comment)
	le.PutUint64(b[offSystemUpTime:], h.SystemUpTime)
	le.PutUint32(b[offMiniDumpFields:], h.MiniDumpFields)
	le.PutUint32(b[offSecondaryDataState:], h.SecondaryDataState)
	le.PutUint32(b[offProductType:], h.ProductType)
	le.PutUint32(b[offSuiteMask:], h.SuiteMask)
	le.PutUint32(b[offWriterStatus:], h.WriterStatus)
	b[offKdSecondaryVersion-1] = 0
	b[offKdSecondaryVersion] = h.KdSecondaryVersion
	le.PutUint32(b[offAttributes:], h.Attributes)
	le.PutUint32(b[offBootID:], h.BootID)
	return b, nil
}

// decodeComment keeps the bytes before the first NUL; a comment that is all "PAGE" fill is unset.
func decodeComment(c []byte) string {
	if bytes.Equal(c, bytes.Repeat([]byte(sigPAGE), len(c)/4)) {
		return ""
	}
	if i := bytes.IndexByte(c, 0); i >= 0 {
		c = c[:i]
	}
	return string(c)
}

// decodeUTF16 decodes little-endian UTF-16 code units.
func decodeUTF16(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}
