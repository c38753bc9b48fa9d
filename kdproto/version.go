package kdproto

// DBGKD_GET_VERSION64 (40 bytes, at 0x10 of the manipulate structure; kd-protocol.md §4).
const GetVersionSize = 40

// DBGKD_GET_VERSION64.Flags bits.
const (
	VersionFlagMP         uint16 = 0x01
	VersionFlagData       uint16 = 0x02 // the debugger data list is valid
	VersionFlagPtr64      uint16 = 0x04
	VersionFlagNoMM       uint16 = 0x08
	VersionFlagHSS        uint16 = 0x10
	VersionFlagPartitions uint16 = 0x20
	VersionFlagHalInNtos  uint16 = 0x40
)

// Values a Windows x64 kernel reports (kd-protocol.md §4, §11.4).
const (
	ProtocolVersion64     uint8  = 6 // DBGKD_64BIT_PROTOCOL_VERSION2
	SecondaryVersionAMD64 uint8  = 2 // KD_SECONDARY_VERSION_AMD64_CONTEXT
	MachineAMD64          uint16 = 0x8664
	MachineI386           uint16 = 0x14C
	MachineARM64          uint16 = 0xAA64
)

// GetVersion64 is DBGKD_GET_VERSION64. Offsets in comments are within the structure (add 0x10 for the packet).
type GetVersion64 struct {
	MajorVersion       uint16 `kd:"hex"` // 0x00: low byte 0x0F free / 0x0C checked; high byte DBGKD_MAJOR_TYPE
	MinorVersion       uint16 // 0x02: build number
	ProtocolVersion    uint8  // 0x04
	KdSecondaryVersion uint8  // 0x05
	Flags              uint16 `kd:"hex"` // 0x06
	MachineType        uint16 `kd:"hex"` // 0x08
	MaxPacketType      uint8  // 0x0A
	MaxStateChange     uint8  // 0x0B
	MaxManipulate      uint8  // 0x0C
	Simulation         uint8  // 0x0D
	Unused             uint16 // 0x0E
	KernBase           uint64 `kd:"addr"` // 0x10
	PsLoadedModuleList uint64 `kd:"addr"` // 0x18
	DebuggerDataList   uint64 `kd:"addr"` // 0x20
}

// DefaultGetVersion64 returns the block a running x64 free-build kernel reports, with the addresses to be
// filled in by the caller (kd-protocol.md §11.4).
func DefaultGetVersion64(build uint16, kernBase, psLoadedModuleList, debuggerDataList uint64) *GetVersion64 {
	return &GetVersion64{
		MajorVersion:       0x000F,
		MinorVersion:       build,
		ProtocolVersion:    ProtocolVersion64,
		KdSecondaryVersion: SecondaryVersionAMD64,
		Flags:              VersionFlagMP | VersionFlagData | VersionFlagPtr64,
		MachineType:        MachineAMD64,
		MaxPacketType:      uint8(PacketTypeMax),
		MaxStateChange:     uint8(StateChangeMaximum - StateChangeException),
		MaxManipulate:      uint8(APIMaximumManipulate - APIReadVirtualMemory),
		KernBase:           kernBase,
		PsLoadedModuleList: psLoadedModuleList,
		DebuggerDataList:   debuggerDataList,
	}
}
