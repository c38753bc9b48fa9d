package kdproto

import (
	"encoding/binary"
	"fmt"
	"reflect"
)

// DBGKD_MANIPULATE_STATE64 offsets (kd-protocol.md §2.1).
const (
	offManipAPINumber      = 0x00 // u32
	offManipProcessorLevel = 0x04 // u16
	offManipProcessor      = 0x06 // u16
	offManipReturnStatus   = 0x08 // u32
	offManipPad            = 0x0C // u32 alignment padding
	offManipUnion          = 0x10 // 40-byte union u
	ManipulateSize         = 0x38 // fixed part; trailing data follows
	ManipulateUnionSize    = 40
)

// Manipulate is DBGKD_MANIPULATE_STATE64: a debugger request or the target's response, plus trailing data.
//
// U holds the API-specific union member; its concrete type follows APINumber (see UnionFor). Unknown APIs
// decode to *RawUnion so that a target can still answer them with STATUS_UNSUCCESSFUL.
type Manipulate struct {
	APINumber      uint32
	ProcessorLevel uint16
	Processor      uint16
	ReturnStatus   uint32
	Pad            uint32 // junk from WinDbg is kept so responses can echo the request's bytes
	U              ManipulateUnion
	Data           []byte // trailing ("additional") data
}

// ManipulateUnion is one member of the 40-byte union; every implementation encodes to exactly 40 bytes.
type ManipulateUnion interface{ manipulateUnion() }

// unionCtors maps each ApiNumber to a constructor of its union member (a table, never mutated).
var unionCtors = map[uint32]func() ManipulateUnion{
	APIReadVirtualMemory:            func() ManipulateUnion { return &ReadMemory64{} },
	APIReadControlSpace:             func() ManipulateUnion { return &ReadMemory64{} },
	APIReadPhysicalMemory:           func() ManipulateUnion { return &ReadMemory64{} },
	APIWriteVirtualMemory:           func() ManipulateUnion { return &WriteMemory64{} },
	APIWriteControlSpace:            func() ManipulateUnion { return &WriteMemory64{} },
	APIWritePhysicalMemory:          func() ManipulateUnion { return &WriteMemory64{} },
	APIGetContext:                   func() ManipulateUnion { return &GetContext{} },
	APISetContext:                   func() ManipulateUnion { return &SetContext{} },
	APIWriteBreakPoint:              func() ManipulateUnion { return &WriteBreakpoint64{} },
	APIRestoreBreakPoint:            func() ManipulateUnion { return &RestoreBreakpoint{} },
	APIContinue:                     func() ManipulateUnion { return &Continue{} },
	APIContinue2:                    func() ManipulateUnion { return &Continue2{} },
	APIReadIoSpace:                  func() ManipulateUnion { return &ReadWriteIO64{} },
	APIWriteIoSpace:                 func() ManipulateUnion { return &ReadWriteIO64{} },
	APIReboot:                       func() ManipulateUnion { return &RawUnion{} },
	APIQuerySpecialCalls:            func() ManipulateUnion { return &QuerySpecialCalls{} },
	APISetSpecialCall:               func() ManipulateUnion { return &SetSpecialCall64{} },
	APIClearSpecialCalls:            func() ManipulateUnion { return &RawUnion{} },
	APISetInternalBreakPoint:        func() ManipulateUnion { return &SetInternalBreakpoint64{} },
	APIGetInternalBreakPoint:        func() ManipulateUnion { return &GetInternalBreakpoint64{} },
	APIReadIoSpaceExtended:          func() ManipulateUnion { return &ReadWriteIOExtended64{} },
	APIWriteIoSpaceExtended:         func() ManipulateUnion { return &ReadWriteIOExtended64{} },
	APIGetVersion:                   func() ManipulateUnion { return &GetVersion64{} },
	APIWriteBreakPointEx:            func() ManipulateUnion { return &BreakpointEx{} },
	APIRestoreBreakPointEx:          func() ManipulateUnion { return &BreakpointEx{} },
	APICauseBugCheck:                func() ManipulateUnion { return &RawUnion{} },
	APISwitchProcessor:              func() ManipulateUnion { return &RawUnion{} },
	APIPageIn:                       func() ManipulateUnion { return &RawUnion{} },
	APIReadMachineSpecificRegister:  func() ManipulateUnion { return &ReadWriteMSR{} },
	APIWriteMachineSpecificRegister: func() ManipulateUnion { return &ReadWriteMSR{} },
	APIOldVlm1:                      func() ManipulateUnion { return &RawUnion{} },
	APIOldVlm2:                      func() ManipulateUnion { return &RawUnion{} },
	APISearchMemory:                 func() ManipulateUnion { return &SearchMemory{} },
	APIGetBusData:                   func() ManipulateUnion { return &GetSetBusData{} },
	APISetBusData:                   func() ManipulateUnion { return &GetSetBusData{} },
	APICheckLowMemory:               func() ManipulateUnion { return &RawUnion{} },
	APIClearAllInternalBreakpoints:  func() ManipulateUnion { return &RawUnion{} },
	APIFillMemory:                   func() ManipulateUnion { return &FillMemory{} },
	APIQueryMemory:                  func() ManipulateUnion { return &QueryMemory{} },
	APISwitchPartition:              func() ManipulateUnion { return &SwitchPartition{} },
	APIWriteCustomBreakpoint:        func() ManipulateUnion { return &WriteCustomBreakpoint{} },
	APIGetContextEx:                 func() ManipulateUnion { return &ContextEx{} },
	APISetContextEx:                 func() ManipulateUnion { return &ContextEx{} },
}

// UnionFor returns a zero union member of the type APINumber api uses, or *UnknownAPIError.
func UnionFor(api uint32) (ManipulateUnion, error) {
	if f, ok := unionCtors[api]; ok {
		return f(), nil
	}
	return nil, &UnknownAPIError{Family: "manipulate", API: api}
}

// KnownAPI reports whether api is a manipulate API this package models.
func KnownAPI(api uint32) bool { _, ok := unionCtors[api]; return ok }

// NewManipulate builds a request for api with the given union member (nil → zero member) and trailing data.
// It returns *UnknownAPIError for an unknown api and an error when u's type does not belong to api.
func NewManipulate(api uint32, u ManipulateUnion, data []byte) (*Manipulate, error) {
	want, err := UnionFor(api)
	if err != nil {
		return nil, err
	}
	if u == nil {
		u = want
	} else if reflect.TypeOf(u) != reflect.TypeOf(want) {
		return nil, fmt.Errorf("%s takes %T, not %T", APIName(api), want, u)
	}
	return &Manipulate{APINumber: api, U: u, Data: data}, nil
}

// DecodeManipulate parses a KD_STATE_MANIPULATE payload. Unknown APIs decode with a *RawUnion.
func DecodeManipulate(b []byte) (*Manipulate, error) {
	if len(b) < ManipulateSize {
		return nil, &ShortError{What: "DBGKD_MANIPULATE_STATE64", Need: ManipulateSize, Have: len(b)}
	}
	m := &Manipulate{
		APINumber:      binary.LittleEndian.Uint32(b[offManipAPINumber:]),
		ProcessorLevel: binary.LittleEndian.Uint16(b[offManipProcessorLevel:]),
		Processor:      binary.LittleEndian.Uint16(b[offManipProcessor:]),
		ReturnStatus:   binary.LittleEndian.Uint32(b[offManipReturnStatus:]),
		Pad:            binary.LittleEndian.Uint32(b[offManipPad:]),
	}
	u, err := UnionFor(m.APINumber)
	if err != nil {
		u = &RawUnion{}
	}
	if err := decodeFixed(b[offManipUnion:ManipulateSize], u, APIName(m.APINumber)+" union"); err != nil {
		return nil, err
	}
	m.U = u
	m.Data = cloneBytes(b[ManipulateSize:])
	return m, nil
}

// MarshalBinary encodes the 56-byte structure and the trailing data.
func (m *Manipulate) MarshalBinary() ([]byte, error) {
	if ManipulateSize+len(m.Data) > MaxPayload {
		return nil, fmt.Errorf("encode %s: %d data bytes exceed %d", APIName(m.APINumber), len(m.Data), MaxManipulateData)
	}
	b := make([]byte, offManipUnion, ManipulateSize+len(m.Data))
	binary.LittleEndian.PutUint32(b[offManipAPINumber:], m.APINumber)
	binary.LittleEndian.PutUint16(b[offManipProcessorLevel:], m.ProcessorLevel)
	binary.LittleEndian.PutUint16(b[offManipProcessor:], m.Processor)
	binary.LittleEndian.PutUint32(b[offManipReturnStatus:], m.ReturnStatus)
	binary.LittleEndian.PutUint32(b[offManipPad:], m.Pad)
	u := m.U
	if u == nil {
		u = &RawUnion{}
	}
	b, err := appendFixed(b, u, APIName(m.APINumber)+" union")
	if err != nil {
		return nil, err
	}
	if len(b) != ManipulateSize {
		return nil, fmt.Errorf("encode %s: union %T is %d bytes, want %d", APIName(m.APINumber), u, len(b)-offManipUnion, ManipulateUnionSize)
	}
	return append(b, m.Data...), nil
}

// Reply returns a response skeleton for this request: the same 56 bytes (WinDbg's junk echoed, as Windows
// does), the given ReturnStatus, a copy of the union and no data. The caller fills output fields and Data.
func (m *Manipulate) Reply(status uint32) *Manipulate {
	r := *m
	r.ReturnStatus = status
	r.Data = nil
	if m.U != nil {
		// Round-trip through bytes to deep-copy whatever concrete member U holds.
		if b, err := appendFixed(nil, m.U, "union"); err == nil {
			u, uerr := UnionFor(m.APINumber)
			if uerr != nil {
				u = &RawUnion{}
			}
			if decodeFixed(b, u, "union") == nil {
				r.U = u
			}
		}
	}
	return &r
}
