package kdproto

import "fmt"

// AMD64 CONTEXT: 0x4D0 bytes (kd-protocol.md §5.3; identical in the 7601, 17763, 19041 and 22000 ISF).
const (
	ContextSize            = 0x4D0
	offCtxContextFlags     = 0x30
	offCtxMxCsr            = 0x34
	offCtxSegCs            = 0x38
	offCtxEFlags           = 0x44
	offCtxDr0              = 0x48
	offCtxRax              = 0x78
	offCtxRsp              = 0x98
	offCtxR8               = 0xB8
	offCtxRip              = 0xF8
	offCtxFltSave          = 0x100
	offCtxVectorRegister   = 0x300
	offCtxVectorControl    = 0x4A0
	offCtxLastExceptionRip = 0x4C8
)

// CONTEXT.ContextFlags values for AMD64.
const (
	ContextAMD64          uint32 = 0x00100000
	ContextControl        uint32 = 0x00100001
	ContextInteger        uint32 = 0x00100002
	ContextSegments       uint32 = 0x00100004
	ContextFloatingPoint  uint32 = 0x00100008
	ContextDebugRegisters uint32 = 0x00100010
	ContextFull           uint32 = 0x0010000B
	ContextAll            uint32 = 0x0010001F
	ContextXState         uint32 = 0x00100040
)

// XMMSaveArea32 is XMM_SAVE_AREA32 (the FXSAVE image), 512 bytes at CONTEXT+0x100.
type XMMSaveArea32 struct {
	ControlWord    uint16       `kd:"hex"` // 0x00
	StatusWord     uint16       `kd:"hex"` // 0x02
	TagWord        uint8        `kd:"hex"` // 0x04
	Reserved1      uint8        `kd:"-"`   // 0x05
	ErrorOpcode    uint16       `kd:"hex"` // 0x06
	ErrorOffset    uint32       `kd:"hex"` // 0x08
	ErrorSelector  uint16       `kd:"hex"` // 0x0C
	Reserved2      uint16       `kd:"-"`   // 0x0E
	DataOffset     uint32       `kd:"hex"` // 0x10
	DataSelector   uint16       `kd:"hex"` // 0x14
	Reserved3      uint16       `kd:"-"`   // 0x16
	MxCsr          uint32       `kd:"hex"` // 0x18
	MxCsrMask      uint32       `kd:"hex"` // 0x1C
	FloatRegisters [8][16]byte  // 0x20 (M128A each; 80-bit value in the low 10 bytes)
	XMMRegisters   [16][16]byte // 0xA0
	Reserved4      [96]byte     `kd:"-"` // 0x1A0
}

// Context is the AMD64 CONTEXT record served by GetContext/GetContextEx and written by SetContext.
type Context struct {
	P1Home, P2Home, P3Home, P4Home, P5Home, P6Home uint64 // 0x00..0x28

	ContextFlags uint32 `kd:"hex"` // 0x30
	MxCsr        uint32 `kd:"hex"` // 0x34

	SegCs, SegDs, SegEs, SegFs, SegGs, SegSs uint16 // 0x38..0x42
	EFlags                                   uint32 // 0x44

	Dr0, Dr1, Dr2, Dr3, Dr6, Dr7 uint64 // 0x48..0x70

	Rax, Rcx, Rdx, Rbx, Rsp, Rbp, Rsi, Rdi uint64 // 0x78..0xB0
	R8, R9, R10, R11, R12, R13, R14, R15   uint64 // 0xB8..0xF0
	Rip                                    uint64 // 0xF8

	FltSave XMMSaveArea32 // 0x100

	VectorRegister [26][16]byte // 0x300
	VectorControl  uint64       // 0x4A0

	DebugControl         uint64 // 0x4A8
	LastBranchToRip      uint64 // 0x4B0
	LastBranchFromRip    uint64 // 0x4B8
	LastExceptionToRip   uint64 // 0x4C0
	LastExceptionFromRip uint64 // 0x4C8
}

// DecodeContext parses an AMD64 CONTEXT (at least 0x4D0 bytes; extra bytes are an error, as the record is fixed).
func DecodeContext(b []byte) (*Context, error) {
	if len(b) > ContextSize {
		return nil, &MalformedError{What: "AMD64 CONTEXT", Reason: fmt.Sprintf("%d bytes, want %d", len(b), ContextSize)}
	}
	c := &Context{}
	if err := decodeFixed(b, c, "AMD64 CONTEXT"); err != nil {
		return nil, err
	}
	return c, nil
}

// MarshalBinary encodes the 0x4D0-byte record.
func (c *Context) MarshalBinary() ([]byte, error) {
	return appendFixed(make([]byte, 0, ContextSize), c, "AMD64 CONTEXT")
}
