package kdproto

// Members of the DBGKD_MANIPULATE_STATE64 union (kd-protocol.md §2.3). Offsets in comments are from the start
// of the 56-byte structure; each member is padded to the full 40-byte union with a trailing Rest/Unused
// field that keeps whatever bytes the sender left there.

// RawUnion is the union as plain bytes: for APIs without a member (Reboot, SwitchProcessor, …) and unknown APIs.
type RawUnion struct {
	Bytes [40]byte `kd:"raw"`
}

// ReadMemory64 is DBGKD_READ_MEMORY64: ReadVirtualMemory, ReadControlSpace, ReadPhysicalMemory.
type ReadMemory64 struct {
	TargetBaseAddress uint64   `kd:"addr"` // 0x10
	TransferCount     uint32   // 0x18
	ActualBytesRead   uint32   // 0x1C; CacheFlags in physical requests
	Unused            [24]byte `kd:"-"`
}

// WriteMemory64 is DBGKD_WRITE_MEMORY64: WriteVirtualMemory, WriteControlSpace, WritePhysicalMemory.
type WriteMemory64 struct {
	TargetBaseAddress  uint64   `kd:"addr"` // 0x10
	TransferCount      uint32   // 0x18
	ActualBytesWritten uint32   // 0x1C; CacheFlags in physical requests
	Unused             [24]byte `kd:"-"`
}

// GetContext is DBGKD_GET_CONTEXT.
type GetContext struct {
	Unused uint32   // 0x10
	Rest   [36]byte `kd:"-"`
}

// SetContext is DBGKD_SET_CONTEXT; the CONTEXT is the trailing data.
type SetContext struct {
	ContextFlags uint32   `kd:"hex"` // 0x10
	Rest         [36]byte `kd:"-"`
}

// WriteBreakpoint64 is DBGKD_WRITE_BREAKPOINT64.
type WriteBreakpoint64 struct {
	BreakPointAddress uint64   `kd:"addr"` // 0x10
	BreakPointHandle  uint32   // 0x18 (out)
	Rest              [28]byte `kd:"-"`
}

// RestoreBreakpoint is DBGKD_RESTORE_BREAKPOINT.
type RestoreBreakpoint struct {
	BreakPointHandle uint32   // 0x10
	Rest             [36]byte `kd:"-"`
}

// Continue is DBGKD_CONTINUE.
type Continue struct {
	ContinueStatus uint32   `kd:"hex"` // 0x10
	Rest           [36]byte `kd:"-"`
}

// Continue2 is DBGKD_CONTINUE2 with the pack(4) AMD64_DBGKD_CONTROL_SET.
type Continue2 struct {
	ContinueStatus     uint32  `kd:"hex"` // 0x10
	TraceFlag          uint32  // 0x14
	Dr7                uint64  `kd:"hex"`  // 0x18
	CurrentSymbolStart uint64  `kd:"addr"` // 0x20
	CurrentSymbolEnd   uint64  `kd:"addr"` // 0x28
	Rest               [8]byte `kd:"-"`
}

// ReadWriteIO64 is DBGKD_READ_WRITE_IO64.
type ReadWriteIO64 struct {
	IoAddress uint64   `kd:"addr"` // 0x10
	DataSize  uint32   // 0x18
	DataValue uint32   `kd:"hex"` // 0x1C
	Rest      [24]byte `kd:"-"`
}

// ReadWriteIOExtended64 is DBGKD_READ_WRITE_IO_EXTENDED64.
type ReadWriteIOExtended64 struct {
	DataSize      uint32   // 0x10
	InterfaceType uint32   // 0x14
	BusNumber     uint32   // 0x18
	AddressSpace  uint32   // 0x1C
	IoAddress     uint64   `kd:"addr"` // 0x20
	DataValue     uint32   `kd:"hex"`  // 0x28
	Rest          [12]byte `kd:"-"`
}

// QuerySpecialCalls is DBGKD_QUERY_SPECIAL_CALLS.
type QuerySpecialCalls struct {
	NumberOfSpecialCalls uint32   // 0x10
	Rest                 [36]byte `kd:"-"`
}

// SetSpecialCall64 is DBGKD_SET_SPECIAL_CALL64.
type SetSpecialCall64 struct {
	SpecialCall uint64   `kd:"addr"` // 0x10
	Rest        [32]byte `kd:"-"`
}

// SetInternalBreakpoint64 is DBGKD_SET_INTERNAL_BREAKPOINT64.
type SetInternalBreakpoint64 struct {
	BreakpointAddress uint64   `kd:"addr"` // 0x10
	Flags             uint32   `kd:"hex"`  // 0x18
	Rest              [28]byte `kd:"-"`
}

// GetInternalBreakpoint64 is DBGKD_GET_INTERNAL_BREAKPOINT64.
type GetInternalBreakpoint64 struct {
	BreakpointAddress uint64  `kd:"addr"` // 0x10
	Flags             uint32  `kd:"hex"`  // 0x18
	Calls             uint32  // 0x1C
	MaxCallsPerPeriod uint32  // 0x20
	MinInstructions   uint32  // 0x24
	MaxInstructions   uint32  // 0x28
	TotalInstructions uint32  // 0x2C
	Rest              [8]byte `kd:"-"`
}

// BreakpointEx is DBGKD_BREAKPOINTEX (Write/RestoreBreakPointEx); the breakpoint array is trailing data.
type BreakpointEx struct {
	BreakPointCount uint32   // 0x10
	ContinueStatus  uint32   `kd:"hex"` // 0x14
	Rest            [32]byte `kd:"-"`
}

// ReadWriteMSR is DBGKD_READ_WRITE_MSR.
type ReadWriteMSR struct {
	Msr           uint32   `kd:"hex"` // 0x10
	DataValueLow  uint32   `kd:"hex"` // 0x14
	DataValueHigh uint32   `kd:"hex"` // 0x18
	Rest          [28]byte `kd:"-"`
}

// Value returns the 64-bit MSR value.
func (u *ReadWriteMSR) Value() uint64 { return uint64(u.DataValueHigh)<<32 | uint64(u.DataValueLow) }

// SearchMemory is DBGKD_SEARCH_MEMORY; the pattern is trailing data. SearchAddress is FoundAddress on reply.
type SearchMemory struct {
	SearchAddress uint64   `kd:"addr"` // 0x10
	SearchLength  uint64   // 0x18
	PatternLength uint32   // 0x20
	Rest          [20]byte `kd:"-"`
}

// GetSetBusData is DBGKD_GET_SET_BUS_DATA; the data is trailing.
type GetSetBusData struct {
	BusDataType uint32   // 0x10 (4 = PCIConfiguration)
	BusNumber   uint32   // 0x14
	SlotNumber  uint32   `kd:"hex"` // 0x18
	Offset      uint32   `kd:"hex"` // 0x1C
	Length      uint32   // 0x20
	Rest        [20]byte `kd:"-"`
}

// FillMemory is DBGKD_FILL_MEMORY; the pattern is trailing data.
type FillMemory struct {
	Address       uint64   `kd:"addr"` // 0x10
	Length        uint32   // 0x18
	Flags         uint16   `kd:"hex"` // 0x1C (1 virtual, 2 physical)
	PatternLength uint16   // 0x1E
	Rest          [24]byte `kd:"-"`
}

// QueryMemory is DBGKD_QUERY_MEMORY.
type QueryMemory struct {
	Address      uint64   `kd:"addr"` // 0x10
	Reserved     uint64   `kd:"hex"`  // 0x18
	AddressSpace uint32   // 0x20
	Flags        uint32   `kd:"hex"` // 0x24
	Rest         [16]byte `kd:"-"`
}

// SwitchPartition is DBGKD_SWITCH_PARTITION.
type SwitchPartition struct {
	Partition uint32   // 0x10
	Rest      [36]byte `kd:"-"`
}

// WriteCustomBreakpoint is DBGKD_WRITE_CUSTOM_BREAKPOINT.
type WriteCustomBreakpoint struct {
	BreakPointAddress       uint64   `kd:"addr"` // 0x10
	BreakPointInstruction   uint64   `kd:"hex"`  // 0x18
	BreakPointHandle        uint32   // 0x20
	BreakPointInstructionSz uint8    // 0x24
	BreakPointAlignment     uint8    // 0x25
	Rest                    [18]byte `kd:"-"`
}

// ContextEx is DBGKD_CONTEXT_EX (GetContextEx/SetContextEx).
type ContextEx struct {
	Offset      uint32   `kd:"hex"` // 0x10
	ByteCount   uint32   // 0x14
	BytesCopied uint32   // 0x18 (out)
	Rest        [28]byte `kd:"-"`
}

func (*RawUnion) manipulateUnion()                {}
func (*ReadMemory64) manipulateUnion()            {}
func (*WriteMemory64) manipulateUnion()           {}
func (*GetContext) manipulateUnion()              {}
func (*SetContext) manipulateUnion()              {}
func (*WriteBreakpoint64) manipulateUnion()       {}
func (*RestoreBreakpoint) manipulateUnion()       {}
func (*Continue) manipulateUnion()                {}
func (*Continue2) manipulateUnion()               {}
func (*ReadWriteIO64) manipulateUnion()           {}
func (*ReadWriteIOExtended64) manipulateUnion()   {}
func (*QuerySpecialCalls) manipulateUnion()       {}
func (*SetSpecialCall64) manipulateUnion()        {}
func (*SetInternalBreakpoint64) manipulateUnion() {}
func (*GetInternalBreakpoint64) manipulateUnion() {}
func (*GetVersion64) manipulateUnion()            {}
func (*BreakpointEx) manipulateUnion()            {}
func (*ReadWriteMSR) manipulateUnion()            {}
func (*SearchMemory) manipulateUnion()            {}
func (*GetSetBusData) manipulateUnion()           {}
func (*FillMemory) manipulateUnion()              {}
func (*QueryMemory) manipulateUnion()             {}
func (*SwitchPartition) manipulateUnion()         {}
func (*WriteCustomBreakpoint) manipulateUnion()   {}
func (*ContextEx) manipulateUnion()               {}
