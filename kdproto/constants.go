package kdproto

import "fmt"

// KD_PACKET.PacketType values (windbgkd.h; kd-protocol.md §1.1).
const (
	PacketTypeUnused         uint16 = 0 // KDNET connection-check pseudo-packet
	PacketTypeStateChange32  uint16 = 1
	PacketTypeManipulate     uint16 = 2 // KD_STATE_MANIPULATE
	PacketTypeDebugIO        uint16 = 3
	PacketTypeAcknowledge    uint16 = 4
	PacketTypeResend         uint16 = 5
	PacketTypeReset          uint16 = 6
	PacketTypeStateChange64  uint16 = 7
	PacketTypePollBreakin    uint16 = 8 // internal to KdReceivePacket, never on the wire
	PacketTypeTraceIO        uint16 = 9
	PacketTypeControlRequest uint16 = 10
	PacketTypeFileIO         uint16 = 11
	PacketTypeMax            uint16 = 12
)

// Framing limits and ids (kd-protocol.md §1.1, §1.3, §7.6).
const (
	HeaderSize       = 16   // KD_PACKET
	ConnCheckSize    = 12   // KDNET UNUSED pseudo-packet: a KD_PACKET without its Checksum field
	MaxPayload       = 4000 // PACKET_MAX_SIZE
	TrailerByte      = 0xAA // PACKET_TRAILING_BYTE, serial only
	BreakinByte      = 0x62 // the single byte a debugger sends to break in
	InitialPacketID  = 0x80800000
	SyncPacketID     = 0x00000800
	KDNETHostFirstID = 0x80000000 // the debugger's first id on KDNET
)

// packetTypeNames names 0..12 as windbgkd.h does.
var packetTypeNames = [...]string{
	"PACKET_TYPE_UNUSED", "PACKET_TYPE_KD_STATE_CHANGE32", "PACKET_TYPE_KD_STATE_MANIPULATE",
	"PACKET_TYPE_KD_DEBUG_IO", "PACKET_TYPE_KD_ACKNOWLEDGE", "PACKET_TYPE_KD_RESEND", "PACKET_TYPE_KD_RESET",
	"PACKET_TYPE_KD_STATE_CHANGE64", "PACKET_TYPE_KD_POLL_BREAKIN", "PACKET_TYPE_KD_TRACE_IO",
	"PACKET_TYPE_KD_CONTROL_REQUEST", "PACKET_TYPE_KD_FILE_IO", "PACKET_TYPE_MAX",
}

// PacketTypeName returns the windbgkd.h name of a packet type, or a hex placeholder for unknown values.
func PacketTypeName(t uint16) string {
	if int(t) < len(packetTypeNames) {
		return packetTypeNames[t]
	}
	return fmt.Sprintf("PACKET_TYPE_0x%x", t)
}

// DBGKD_MANIPULATE_STATE64.ApiNumber values (kd-protocol.md §2.2).
const (
	APIReadVirtualMemory            uint32 = 0x3130
	APIWriteVirtualMemory           uint32 = 0x3131
	APIGetContext                   uint32 = 0x3132
	APISetContext                   uint32 = 0x3133
	APIWriteBreakPoint              uint32 = 0x3134
	APIRestoreBreakPoint            uint32 = 0x3135
	APIContinue                     uint32 = 0x3136
	APIReadControlSpace             uint32 = 0x3137
	APIWriteControlSpace            uint32 = 0x3138
	APIReadIoSpace                  uint32 = 0x3139
	APIWriteIoSpace                 uint32 = 0x313A
	APIReboot                       uint32 = 0x313B
	APIContinue2                    uint32 = 0x313C
	APIReadPhysicalMemory           uint32 = 0x313D
	APIWritePhysicalMemory          uint32 = 0x313E
	APIQuerySpecialCalls            uint32 = 0x313F
	APISetSpecialCall               uint32 = 0x3140
	APIClearSpecialCalls            uint32 = 0x3141
	APISetInternalBreakPoint        uint32 = 0x3142
	APIGetInternalBreakPoint        uint32 = 0x3143
	APIReadIoSpaceExtended          uint32 = 0x3144
	APIWriteIoSpaceExtended         uint32 = 0x3145
	APIGetVersion                   uint32 = 0x3146
	APIWriteBreakPointEx            uint32 = 0x3147
	APIRestoreBreakPointEx          uint32 = 0x3148
	APICauseBugCheck                uint32 = 0x3149
	APISwitchProcessor              uint32 = 0x3150
	APIPageIn                       uint32 = 0x3151
	APIReadMachineSpecificRegister  uint32 = 0x3152
	APIWriteMachineSpecificRegister uint32 = 0x3153
	APIOldVlm1                      uint32 = 0x3154
	APIOldVlm2                      uint32 = 0x3155
	APISearchMemory                 uint32 = 0x3156
	APIGetBusData                   uint32 = 0x3157
	APISetBusData                   uint32 = 0x3158
	APICheckLowMemory               uint32 = 0x3159
	APIClearAllInternalBreakpoints  uint32 = 0x315A
	APIFillMemory                   uint32 = 0x315B
	APIQueryMemory                  uint32 = 0x315C
	APISwitchPartition              uint32 = 0x315D
	APIWriteCustomBreakpoint        uint32 = 0x315E
	APIGetContextEx                 uint32 = 0x315F
	APISetContextEx                 uint32 = 0x3160
	APIMaximumManipulate            uint32 = 0x3161 // upper bound, not an API
)

// Other ApiNumber families (state changes, I/O packets).
const (
	StateChangeException   uint32 = 0x3030 // DbgKdExceptionStateChange
	StateChangeLoadSymbols uint32 = 0x3031 // DbgKdLoadSymbolsStateChange
	StateChangeCommand     uint32 = 0x3032 // DbgKdCommandStringStateChange
	StateChangeMaximum     uint32 = 0x3033
	AlternateStateChange   uint32 = 0x10000 // ORed into NewState by DbgKdAlternateStateChange

	APIPrintString uint32 = 0x3230 // DbgKdPrintStringApi (DEBUG_IO)
	APIGetString   uint32 = 0x3231 // DbgKdGetStringApi (DEBUG_IO)
	APIPrintTrace  uint32 = 0x3330 // DbgKdPrintTraceApi (TRACE_IO)

	APICreateFile uint32 = 0x3430 // DbgKdCreateFileApi (FILE_IO)
	APIReadFile   uint32 = 0x3431
	APIWriteFile  uint32 = 0x3432
	APICloseFile  uint32 = 0x3433

	APIRequestHardwareBp uint32 = 0x4300 // CONTROL_REQUEST
	APIReleaseHardwareBp uint32 = 0x4301
)

// apiNames maps every ApiNumber the reference lists to its windbgkd.h name.
var apiNames = map[uint32]string{
	APIReadVirtualMemory:            "DbgKdReadVirtualMemoryApi",
	APIWriteVirtualMemory:           "DbgKdWriteVirtualMemoryApi",
	APIGetContext:                   "DbgKdGetContextApi",
	APISetContext:                   "DbgKdSetContextApi",
	APIWriteBreakPoint:              "DbgKdWriteBreakPointApi",
	APIRestoreBreakPoint:            "DbgKdRestoreBreakPointApi",
	APIContinue:                     "DbgKdContinueApi",
	APIReadControlSpace:             "DbgKdReadControlSpaceApi",
	APIWriteControlSpace:            "DbgKdWriteControlSpaceApi",
	APIReadIoSpace:                  "DbgKdReadIoSpaceApi",
	APIWriteIoSpace:                 "DbgKdWriteIoSpaceApi",
	APIReboot:                       "DbgKdRebootApi",
	APIContinue2:                    "DbgKdContinueApi2",
	APIReadPhysicalMemory:           "DbgKdReadPhysicalMemoryApi",
	APIWritePhysicalMemory:          "DbgKdWritePhysicalMemoryApi",
	APIQuerySpecialCalls:            "DbgKdQuerySpecialCallsApi",
	APISetSpecialCall:               "DbgKdSetSpecialCallApi",
	APIClearSpecialCalls:            "DbgKdClearSpecialCallsApi",
	APISetInternalBreakPoint:        "DbgKdSetInternalBreakPointApi",
	APIGetInternalBreakPoint:        "DbgKdGetInternalBreakPointApi",
	APIReadIoSpaceExtended:          "DbgKdReadIoSpaceExtendedApi",
	APIWriteIoSpaceExtended:         "DbgKdWriteIoSpaceExtendedApi",
	APIGetVersion:                   "DbgKdGetVersionApi",
	APIWriteBreakPointEx:            "DbgKdWriteBreakPointExApi",
	APIRestoreBreakPointEx:          "DbgKdRestoreBreakPointExApi",
	APICauseBugCheck:                "DbgKdCauseBugCheckApi",
	APISwitchProcessor:              "DbgKdSwitchProcessor",
	APIPageIn:                       "DbgKdPageInApi",
	APIReadMachineSpecificRegister:  "DbgKdReadMachineSpecificRegister",
	APIWriteMachineSpecificRegister: "DbgKdWriteMachineSpecificRegister",
	APIOldVlm1:                      "OldVlm1",
	APIOldVlm2:                      "OldVlm2",
	APISearchMemory:                 "DbgKdSearchMemoryApi",
	APIGetBusData:                   "DbgKdGetBusDataApi",
	APISetBusData:                   "DbgKdSetBusDataApi",
	APICheckLowMemory:               "DbgKdCheckLowMemoryApi",
	APIClearAllInternalBreakpoints:  "DbgKdClearAllInternalBreakpointsApi",
	APIFillMemory:                   "DbgKdFillMemoryApi",
	APIQueryMemory:                  "DbgKdQueryMemoryApi",
	APISwitchPartition:              "DbgKdSwitchPartition",
	APIWriteCustomBreakpoint:        "DbgKdWriteCustomBreakpointApi",
	APIGetContextEx:                 "DbgKdGetContextExApi",
	APISetContextEx:                 "DbgKdSetContextExApi",
	APIMaximumManipulate:            "DbgKdMaximumManipulate",
	StateChangeException:            "DbgKdExceptionStateChange",
	StateChangeLoadSymbols:          "DbgKdLoadSymbolsStateChange",
	StateChangeCommand:              "DbgKdCommandStringStateChange",
	StateChangeMaximum:              "DbgKdMaximumStateChange",
	APIPrintString:                  "DbgKdPrintStringApi",
	APIGetString:                    "DbgKdGetStringApi",
	APIPrintTrace:                   "DbgKdPrintTraceApi",
	APICreateFile:                   "DbgKdCreateFileApi",
	APIReadFile:                     "DbgKdReadFileApi",
	APIWriteFile:                    "DbgKdWriteFileApi",
	APICloseFile:                    "DbgKdCloseFileApi",
	APIRequestHardwareBp:            "DbgKdRequestHardwareBp",
	APIReleaseHardwareBp:            "DbgKdReleaseHardwareBp",
}

// APIName returns the windbgkd.h name of any ApiNumber (manipulate, state change, I/O), or a hex placeholder.
// State changes carrying the alternate bit are named after their base state with an "Alternate" prefix.
func APIName(api uint32) string {
	if n, ok := apiNames[api]; ok {
		return n
	}
	if api&AlternateStateChange != 0 {
		if n, ok := apiNames[api&^AlternateStateChange]; ok && api&^AlternateStateChange < StateChangeMaximum {
			return "Alternate" + n
		}
	}
	return fmt.Sprintf("UnknownApi_0x%x", api)
}

// StateName names a DBGKD_ANY_WAIT_STATE_CHANGE.NewState value.
func StateName(state uint32) string { return APIName(state) }

// NoReply reports whether the target answers a manipulate request with no response packet: the continue
// family resumes the target, SwitchProcessor answers with a new state change, and the others never return.
// A client must not wait for a response to these (kd-protocol.md §11.2).
func NoReply(api uint32) bool {
	switch api {
	case APIContinue, APIContinue2, APISwitchProcessor, APIClearAllInternalBreakpoints, APIReboot, APICauseBugCheck:
		return true
	}
	return false
}

// NTSTATUS and continue-status values used on the wire (kd-protocol.md §2.3).
const (
	StatusSuccess              uint32 = 0x00000000
	StatusPending              uint32 = 0x00000103
	StatusUnsuccessful         uint32 = 0xC0000001 // "not supported": the debugger falls back
	StatusInvalidParameter     uint32 = 0xC000000D
	StatusNoSuchDevice         uint32 = 0xC000000E
	StatusNoSuchFile           uint32 = 0xC000000F
	StatusDatatypeMisalignment uint32 = 0x80000002
	StatusBreakpoint           uint32 = 0x80000003
	StatusSingleStep           uint32 = 0x80000004
	StatusNoMoreEntries        uint32 = 0x8000001A
	StatusWakeSystemDebugger   uint32 = 0x80000024
	DBGContinue                uint32 = 0x00010002
	DBGExceptionHandled        uint32 = 0x00010001
	DBGExceptionNotHandled     uint32 = 0x80010001
	MaxManipulateData                 = MaxPayload - ManipulateSize // 3944: the most data one response carries
)

// AMD64 control-space addresses for Read/WriteControlSpace (kd-protocol.md §5.1).
const (
	ControlSpaceKPCR     uint64 = 0
	ControlSpaceKPRCB    uint64 = 1
	ControlSpaceKSpecial uint64 = 2
	ControlSpaceKThread  uint64 = 3
)
