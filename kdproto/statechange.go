package kdproto

import (
	"encoding/binary"
	"fmt"
)

// DBGKD_ANY_WAIT_STATE_CHANGE (x64) offsets (kd-protocol.md §3).
const (
	offSCNewState         = 0x00 // u32
	offSCProcessorLevel   = 0x04 // u16
	offSCProcessor        = 0x06 // u16
	offSCNumberProcessors = 0x08 // u32
	offSCPad              = 0x0C // u32
	offSCThread           = 0x10 // u64
	offSCProgramCounter   = 0x18 // u64
	offSCUnion            = 0x20 // 0xA0-byte union
	offSCControlReport    = 0xC0 // AMD64_DBGKD_CONTROL_REPORT, 0x30 bytes
	StateChangeSize       = 0xF0 // 240; trailing data follows
	StateChangeUnionSize  = 0xA0
	ControlReportSize     = 0x30
)

// ControlReport flags (AMD64_DBGKD_CONTROL_REPORT.ReportFlags).
const (
	ReportIncludesSegs uint16 = 1
	ReportStandardCS   uint16 = 2
)

// StateChange is DBGKD_ANY_WAIT_STATE_CHANGE for AMD64: the target's stop notification.
type StateChange struct {
	NewState         uint32
	ProcessorLevel   uint16
	Processor        uint16
	NumberProcessors uint32
	Pad              uint32
	Thread           uint64
	ProgramCounter   uint64
	U                StateChangeUnion
	ControlReport    ControlReportAMD64
	Data             []byte // load-symbols path or command strings
}

// StateChangeUnion is one member of the 0xA0-byte union; each encodes to exactly 0xA0 bytes.
type StateChangeUnion interface{ stateChangeUnion() }

// Exception64 is DBGKM_EXCEPTION64 (EXCEPTION_RECORD64 + FirstChance), at 0x20.
type Exception64 struct {
	ExceptionCode        uint32     `kd:"hex"`  // 0x20
	ExceptionFlags       uint32     `kd:"hex"`  // 0x24
	ExceptionRecord      uint64     `kd:"addr"` // 0x28
	ExceptionAddress     uint64     `kd:"addr"` // 0x30
	NumberParameters     uint32     // 0x38
	Pad                  uint32     `kd:"-"`   // 0x3C
	ExceptionInformation [15]uint64 `kd:"hex"` // 0x40..0xB7
	FirstChance          uint32     // 0xB8
	Pad2                 uint32     `kd:"-"` // 0xBC
}

// LoadSymbols64 is DBGKD_LOAD_SYMBOLS64, at 0x20; the ANSI path is the trailing data.
type LoadSymbols64 struct {
	PathNameLength uint32    // 0x20, including the NUL; 0 = no path
	Pad            uint32    `kd:"-"`    // 0x24
	BaseOfDll      uint64    `kd:"addr"` // 0x28
	ProcessID      uint64    `kd:"hex"`  // 0x30
	CheckSum       uint32    `kd:"hex"`  // 0x38
	SizeOfImage    uint32    `kd:"hex"`  // 0x3C
	UnloadSymbols  uint8     // 0x40
	Rest           [127]byte `kd:"-"`
}

// CommandString64 is DBGKD_COMMAND_STRING, at 0x20; NameString\0CommandString\0 is the trailing data.
type CommandString64 struct {
	Flags     uint32    `kd:"hex"` // 0x20
	Reserved1 uint32    `kd:"-"`   // 0x24
	Reserved2 [7]uint64 `kd:"-"`   // 0x28
	Rest      [96]byte  `kd:"-"`
}

// RawStateUnion is the union as bytes, for unknown NewState values.
type RawStateUnion struct {
	Bytes [StateChangeUnionSize]byte `kd:"raw"`
}

func (*Exception64) stateChangeUnion()     {}
func (*LoadSymbols64) stateChangeUnion()   {}
func (*CommandString64) stateChangeUnion() {}
func (*RawStateUnion) stateChangeUnion()   {}

// ControlReportAMD64 is AMD64_DBGKD_CONTROL_REPORT at 0xC0.
type ControlReportAMD64 struct {
	Dr6               uint64   `kd:"hex"` // 0xC0
	Dr7               uint64   `kd:"hex"` // 0xC8
	EFlags            uint32   `kd:"hex"` // 0xD0
	InstructionCount  uint16   // 0xD4
	ReportFlags       uint16   `kd:"hex"`   // 0xD6
	InstructionStream [16]byte `kd:"bytes"` // 0xD8
	SegCs             uint16   `kd:"hex"`   // 0xE8
	SegDs             uint16   `kd:"hex"`   // 0xEA
	SegEs             uint16   `kd:"hex"`   // 0xEC
	SegFs             uint16   `kd:"hex"`   // 0xEE
}

// stateUnionFor picks the union member for NewState (the alternate bit does not change the layout).
func stateUnionFor(state uint32) StateChangeUnion {
	switch state &^ AlternateStateChange {
	case StateChangeException:
		return &Exception64{}
	case StateChangeLoadSymbols:
		return &LoadSymbols64{}
	case StateChangeCommand:
		return &CommandString64{}
	}
	return &RawStateUnion{}
}

// DecodeStateChange parses a KD_STATE_CHANGE64 payload (240 bytes plus trailing data).
func DecodeStateChange(b []byte) (*StateChange, error) {
	if len(b) < StateChangeSize {
		return nil, &ShortError{What: "DBGKD_ANY_WAIT_STATE_CHANGE", Need: StateChangeSize, Have: len(b)}
	}
	sc := &StateChange{
		NewState:         binary.LittleEndian.Uint32(b[offSCNewState:]),
		ProcessorLevel:   binary.LittleEndian.Uint16(b[offSCProcessorLevel:]),
		Processor:        binary.LittleEndian.Uint16(b[offSCProcessor:]),
		NumberProcessors: binary.LittleEndian.Uint32(b[offSCNumberProcessors:]),
		Pad:              binary.LittleEndian.Uint32(b[offSCPad:]),
		Thread:           binary.LittleEndian.Uint64(b[offSCThread:]),
		ProgramCounter:   binary.LittleEndian.Uint64(b[offSCProgramCounter:]),
	}
	u := stateUnionFor(sc.NewState)
	if err := decodeFixed(b[offSCUnion:offSCControlReport], u, StateName(sc.NewState)+" union"); err != nil {
		return nil, err
	}
	sc.U = u
	if err := decodeFixed(b[offSCControlReport:StateChangeSize], &sc.ControlReport, "AMD64_DBGKD_CONTROL_REPORT"); err != nil {
		return nil, err
	}
	sc.Data = cloneBytes(b[StateChangeSize:])
	return sc, nil
}

// MarshalBinary encodes the 240-byte structure and the trailing data.
func (sc *StateChange) MarshalBinary() ([]byte, error) {
	if StateChangeSize+len(sc.Data) > MaxPayload {
		return nil, fmt.Errorf("encode state change: %d trailing bytes exceed %d", len(sc.Data), MaxPayload-StateChangeSize)
	}
	b := make([]byte, offSCUnion, StateChangeSize+len(sc.Data))
	binary.LittleEndian.PutUint32(b[offSCNewState:], sc.NewState)
	binary.LittleEndian.PutUint16(b[offSCProcessorLevel:], sc.ProcessorLevel)
	binary.LittleEndian.PutUint16(b[offSCProcessor:], sc.Processor)
	binary.LittleEndian.PutUint32(b[offSCNumberProcessors:], sc.NumberProcessors)
	binary.LittleEndian.PutUint32(b[offSCPad:], sc.Pad)
	binary.LittleEndian.PutUint64(b[offSCThread:], sc.Thread)
	binary.LittleEndian.PutUint64(b[offSCProgramCounter:], sc.ProgramCounter)
	u := sc.U
	if u == nil {
		u = stateUnionFor(sc.NewState)
	}
	b, err := appendFixed(b, u, StateName(sc.NewState)+" union")
	if err != nil {
		return nil, err
	}
	if len(b) != offSCControlReport {
		return nil, fmt.Errorf("encode state change: union %T is %d bytes, want %d", u, len(b)-offSCUnion, StateChangeUnionSize)
	}
	b, err = appendFixed(b, &sc.ControlReport, "AMD64_DBGKD_CONTROL_REPORT")
	if err != nil {
		return nil, err
	}
	return append(b, sc.Data...), nil
}
