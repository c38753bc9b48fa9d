package kdproto

import (
	"encoding/binary"
	"fmt"
)

// DBGKD_DEBUG_IO (PacketType 3; kd-protocol.md §6): 16-byte header, then the text.
const (
	offDebugIOAPINumber      = 0x00 // u32
	offDebugIOProcessorLevel = 0x04 // u16
	offDebugIOProcessor      = 0x06 // u16
	offDebugIOLength         = 0x08 // u32 LengthOfString / LengthOfPromptString
	offDebugIOLengthRead     = 0x0C // u32 LengthOfStringRead (GetString only)
	DebugIOSize              = 0x10
)

// DebugIO is DBGKD_DEBUG_IO: DbgPrint (PrintString) or DbgPrompt (GetString) and its reply.
type DebugIO struct {
	APINumber      uint32
	ProcessorLevel uint16
	Processor      uint16
	Length         uint32 // LengthOfString (print) or LengthOfPromptString (prompt)
	LengthRead     uint32 // LengthOfStringRead (prompt reply); junk in PrintString
	Data           []byte // the text, not NUL-terminated
}

// NewPrintString builds a PrintString DEBUG_IO carrying text.
func NewPrintString(processor uint16, text string) *DebugIO {
	return &DebugIO{APINumber: APIPrintString, Processor: processor, Length: uint32(len(text)), Data: []byte(text)}
}

// DecodeDebugIO parses a KD_DEBUG_IO payload.
func DecodeDebugIO(b []byte) (*DebugIO, error) {
	if len(b) < DebugIOSize {
		return nil, &ShortError{What: "DBGKD_DEBUG_IO", Need: DebugIOSize, Have: len(b)}
	}
	return &DebugIO{
		APINumber:      binary.LittleEndian.Uint32(b[offDebugIOAPINumber:]),
		ProcessorLevel: binary.LittleEndian.Uint16(b[offDebugIOProcessorLevel:]),
		Processor:      binary.LittleEndian.Uint16(b[offDebugIOProcessor:]),
		Length:         binary.LittleEndian.Uint32(b[offDebugIOLength:]),
		LengthRead:     binary.LittleEndian.Uint32(b[offDebugIOLengthRead:]),
		Data:           cloneBytes(b[DebugIOSize:]),
	}, nil
}

// MarshalBinary encodes the header and the text.
func (d *DebugIO) MarshalBinary() ([]byte, error) {
	if DebugIOSize+len(d.Data) > MaxPayload {
		return nil, fmt.Errorf("encode DEBUG_IO: %d text bytes exceed %d", len(d.Data), MaxPayload-DebugIOSize)
	}
	b := make([]byte, DebugIOSize, DebugIOSize+len(d.Data))
	binary.LittleEndian.PutUint32(b[offDebugIOAPINumber:], d.APINumber)
	binary.LittleEndian.PutUint16(b[offDebugIOProcessorLevel:], d.ProcessorLevel)
	binary.LittleEndian.PutUint16(b[offDebugIOProcessor:], d.Processor)
	binary.LittleEndian.PutUint32(b[offDebugIOLength:], d.Length)
	binary.LittleEndian.PutUint32(b[offDebugIOLengthRead:], d.LengthRead)
	return append(b, d.Data...), nil
}

// TraceIOSize is the fixed part of DBGKD_TRACE_IO: ApiNumber, ProcessorLevel, Processor, and a 56-byte union
// whose first member is DBGKD_PRINT_TRACE64.LengthOfData.
const TraceIOSize = 0x40

// traceIOHeader is DBGKD_TRACE_IO's fixed part.
type traceIOHeader struct {
	APINumber      uint32
	ProcessorLevel uint16
	Processor      uint16
	LengthOfData   uint32
	Reserved       [52]byte
}

// TraceIO is DBGKD_TRACE_IO (PacketType 9, DbgKdPrintTraceApi).
type TraceIO struct {
	APINumber      uint32
	ProcessorLevel uint16
	Processor      uint16
	LengthOfData   uint32   // 0x08
	Reserved       [52]byte `kd:"-"` // rest of the 56-byte union
	Data           []byte
}

// DecodeTraceIO parses a KD_TRACE_IO payload.
func DecodeTraceIO(b []byte) (*TraceIO, error) {
	var h traceIOHeader
	if err := decodeFixed(b, &h, "DBGKD_TRACE_IO"); err != nil {
		return nil, err
	}
	return &TraceIO{APINumber: h.APINumber, ProcessorLevel: h.ProcessorLevel, Processor: h.Processor,
		LengthOfData: h.LengthOfData, Reserved: h.Reserved, Data: cloneBytes(b[TraceIOSize:])}, nil
}

// MarshalBinary encodes the fixed part and the trailing data.
func (t *TraceIO) MarshalBinary() ([]byte, error) {
	if TraceIOSize+len(t.Data) > MaxPayload {
		return nil, fmt.Errorf("encode TRACE_IO: %d data bytes exceed %d", len(t.Data), MaxPayload-TraceIOSize)
	}
	h := traceIOHeader{t.APINumber, t.ProcessorLevel, t.Processor, t.LengthOfData, t.Reserved}
	b, err := appendFixed(make([]byte, 0, TraceIOSize+len(t.Data)), &h, "DBGKD_TRACE_IO")
	if err != nil {
		return nil, err
	}
	return append(b, t.Data...), nil
}

// DBGKD_FILE_IO (PacketType 11): ApiNumber u32, Status u32, a 56-byte union, then UTF-16 name or file data.
const (
	FileIOSize      = 0x40
	FileIOUnionSize = 56
)

// FileIO is DBGKD_FILE_IO, the .kdfiles exchange.
type FileIO struct {
	APINumber uint32
	Status    uint32
	U         FileIOUnion
	Data      []byte
}

// FileIOUnion is one 56-byte member of the DBGKD_FILE_IO union.
type FileIOUnion interface{ fileIOUnion() }

// CreateFile is DBGKD_CREATE_FILE (at 0x08); the UTF-16 file name is the trailing data.
type CreateFile struct {
	DesiredAccess     uint32   `kd:"hex"` // 0x08
	FileAttributes    uint32   `kd:"hex"` // 0x0C
	ShareAccess       uint32   `kd:"hex"` // 0x10
	CreateDisposition uint32   // 0x14
	CreateOptions     uint32   `kd:"hex"` // 0x18
	Pad               uint32   `kd:"-"`   // 0x1C
	Handle            uint64   `kd:"hex"` // 0x20
	Length            uint64   // 0x28
	Rest              [16]byte `kd:"-"`
}

// ReadWriteFile is DBGKD_READ_FILE / DBGKD_WRITE_FILE (at 0x08).
type ReadWriteFile struct {
	Handle uint64   `kd:"hex"` // 0x08
	Offset uint64   `kd:"hex"` // 0x10
	Length uint32   // 0x18
	Rest   [36]byte `kd:"-"`
}

// CloseFile is DBGKD_CLOSE_FILE (at 0x08).
type CloseFile struct {
	Handle uint64   `kd:"hex"` // 0x08
	Rest   [48]byte `kd:"-"`
}

// RawFileIOUnion is the union as bytes for unknown FILE_IO APIs.
type RawFileIOUnion struct {
	Bytes [FileIOUnionSize]byte `kd:"raw"`
}

func (*CreateFile) fileIOUnion()     {}
func (*ReadWriteFile) fileIOUnion()  {}
func (*CloseFile) fileIOUnion()      {}
func (*RawFileIOUnion) fileIOUnion() {}

func fileIOUnionFor(api uint32) FileIOUnion {
	switch api {
	case APICreateFile:
		return &CreateFile{}
	case APIReadFile, APIWriteFile:
		return &ReadWriteFile{}
	case APICloseFile:
		return &CloseFile{}
	}
	return &RawFileIOUnion{}
}

// DecodeFileIO parses a KD_FILE_IO payload.
func DecodeFileIO(b []byte) (*FileIO, error) {
	if len(b) < FileIOSize {
		return nil, &ShortError{What: "DBGKD_FILE_IO", Need: FileIOSize, Have: len(b)}
	}
	f := &FileIO{APINumber: binary.LittleEndian.Uint32(b[0:]), Status: binary.LittleEndian.Uint32(b[4:])}
	u := fileIOUnionFor(f.APINumber)
	if err := decodeFixed(b[8:FileIOSize], u, APIName(f.APINumber)+" union"); err != nil {
		return nil, err
	}
	f.U = u
	f.Data = cloneBytes(b[FileIOSize:])
	return f, nil
}

// MarshalBinary encodes the fixed part and the trailing data.
func (f *FileIO) MarshalBinary() ([]byte, error) {
	if FileIOSize+len(f.Data) > MaxPayload {
		return nil, fmt.Errorf("encode FILE_IO: %d data bytes exceed %d", len(f.Data), MaxPayload-FileIOSize)
	}
	b := make([]byte, 8, FileIOSize+len(f.Data))
	binary.LittleEndian.PutUint32(b[0:], f.APINumber)
	binary.LittleEndian.PutUint32(b[4:], f.Status)
	u := f.U
	if u == nil {
		u = fileIOUnionFor(f.APINumber)
	}
	b, err := appendFixed(b, u, APIName(f.APINumber)+" union")
	if err != nil {
		return nil, err
	}
	if len(b) != FileIOSize {
		return nil, fmt.Errorf("encode FILE_IO: union %T is %d bytes, want %d", u, len(b)-8, FileIOUnionSize)
	}
	return append(b, f.Data...), nil
}

// ControlRequestSize is DBGKD_CONTROL_REQUEST: ApiNumber and an 8-byte union
// ({HardwareBreakPointNumber u32, Available/Released BOOLEAN + padding}).
const ControlRequestSize = 12

// controlRequestFixed is DBGKD_CONTROL_REQUEST's fixed part.
type controlRequestFixed struct {
	APINumber                uint32
	HardwareBreakPointNumber uint32
	Result                   uint32
}

// ControlRequest is DBGKD_CONTROL_REQUEST (PacketType 10): RequestHardwareBp / ReleaseHardwareBp.
type ControlRequest struct {
	APINumber                uint32
	HardwareBreakPointNumber uint32
	Result                   uint32 `kd:"hex"` // Available (request) or Released (release), a BOOLEAN plus padding
	Data                     []byte
}

// DecodeControlRequest parses a KD_CONTROL_REQUEST payload.
func DecodeControlRequest(b []byte) (*ControlRequest, error) {
	var f controlRequestFixed
	if err := decodeFixed(b, &f, "DBGKD_CONTROL_REQUEST"); err != nil {
		return nil, err
	}
	return &ControlRequest{APINumber: f.APINumber, HardwareBreakPointNumber: f.HardwareBreakPointNumber,
		Result: f.Result, Data: cloneBytes(b[ControlRequestSize:])}, nil
}

// MarshalBinary encodes the fixed part and any trailing bytes.
func (c *ControlRequest) MarshalBinary() ([]byte, error) {
	if ControlRequestSize+len(c.Data) > MaxPayload {
		return nil, fmt.Errorf("encode CONTROL_REQUEST: %d trailing bytes exceed %d", len(c.Data), MaxPayload-ControlRequestSize)
	}
	f := controlRequestFixed{c.APINumber, c.HardwareBreakPointNumber, c.Result}
	b, err := appendFixed(make([]byte, 0, ControlRequestSize+len(c.Data)), &f, "DBGKD_CONTROL_REQUEST")
	if err != nil {
		return nil, err
	}
	return append(b, c.Data...), nil
}
