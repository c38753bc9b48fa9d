package kdproto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"
)

// randomBytes fills n bytes from a seeded generator so failures reproduce.
func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

func TestUnionSizes(t *testing.T) {
	for api := APIReadVirtualMemory; api < APIMaximumManipulate; api++ {
		u, err := UnionFor(api)
		if err != nil {
			continue
		}
		require.Equal(t, ManipulateUnionSize, binary.Size(u), "%s union %T", APIName(api), u)
	}
	for _, u := range []StateChangeUnion{&Exception64{}, &LoadSymbols64{}, &CommandString64{}, &RawStateUnion{}} {
		require.Equal(t, StateChangeUnionSize, binary.Size(u), "%T", u)
	}
	for _, u := range []FileIOUnion{&CreateFile{}, &ReadWriteFile{}, &CloseFile{}, &RawFileIOUnion{}} {
		require.Equal(t, FileIOUnionSize, binary.Size(u), "%T", u)
	}
	require.Equal(t, ControlReportSize, binary.Size(&ControlReportAMD64{}))
	require.Equal(t, GetVersionSize, binary.Size(&GetVersion64{}))
	require.Equal(t, ContextSize, binary.Size(&Context{}))
	require.Equal(t, 512, binary.Size(&XMMSaveArea32{}))
	require.Equal(t, KSpecialSizeWin10, binary.Size(&KSpecialRegisters{}))
	require.Equal(t, TraceIOSize, binary.Size(&traceIOHeader{}))
	require.Equal(t, ControlRequestSize, binary.Size(&controlRequestFixed{}))
	_, err := UnionFor(0x3100)
	var ue *UnknownAPIError
	require.ErrorAs(t, err, &ue)
}

// fieldOffset encodes v with only the named field set to a marker and returns where the marker lands.
func fieldOffset(t *testing.T, v any, field string) int {
	t.Helper()
	rv := reflect.New(reflect.TypeOf(v).Elem())
	f := rv.Elem().FieldByName(field)
	require.True(t, f.IsValid(), field)
	switch f.Kind() {
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		f.SetUint(0xA5)
	default:
		t.Fatalf("field %s kind %s", field, f.Kind())
	}
	b, err := appendFixed(nil, rv.Interface(), "probe")
	require.NoError(t, err)
	for i, c := range b {
		if c == 0xA5 {
			return i
		}
	}
	t.Fatalf("marker for %s not found", field)
	return -1
}

// TestOffsetsMatchReference checks struct layouts against the reference tables' offsets.
func TestOffsetsMatchReference(t *testing.T) {
	tests := []struct {
		v      any
		field  string
		offset int // as in kd-protocol.md
		base   int // where the structure starts in its parent
	}{
		{&ReadMemory64{}, "TransferCount", 0x18, offManipUnion},
		{&ReadMemory64{}, "ActualBytesRead", 0x1C, offManipUnion},
		{&Continue2{}, "TraceFlag", 0x14, offManipUnion},
		{&Continue2{}, "Dr7", 0x18, offManipUnion},
		{&Continue2{}, "CurrentSymbolEnd", 0x28, offManipUnion},
		{&ReadWriteIOExtended64{}, "IoAddress", 0x20, offManipUnion},
		{&ReadWriteIOExtended64{}, "DataValue", 0x28, offManipUnion},
		{&ReadWriteMSR{}, "DataValueHigh", 0x18, offManipUnion},
		{&SearchMemory{}, "PatternLength", 0x20, offManipUnion},
		{&GetSetBusData{}, "Length", 0x20, offManipUnion},
		{&FillMemory{}, "PatternLength", 0x1E, offManipUnion},
		{&QueryMemory{}, "Flags", 0x24, offManipUnion},
		{&WriteCustomBreakpoint{}, "BreakPointAlignment", 0x25, offManipUnion},
		{&ContextEx{}, "BytesCopied", 0x18, offManipUnion},
		{&GetVersion64{}, "MachineType", 0x18, offManipUnion},
		{&GetVersion64{}, "MaxManipulate", 0x1C, offManipUnion},
		{&GetVersion64{}, "DebuggerDataList", 0x30, offManipUnion},
		{&Exception64{}, "ExceptionAddress", 0x30, offSCUnion},
		{&Exception64{}, "FirstChance", 0xB8, offSCUnion},
		{&LoadSymbols64{}, "SizeOfImage", 0x3C, offSCUnion},
		{&LoadSymbols64{}, "UnloadSymbols", 0x40, offSCUnion},
		{&ControlReportAMD64{}, "InstructionCount", 0xD4, offSCControlReport},
		{&ControlReportAMD64{}, "SegCs", 0xE8, offSCControlReport},
		{&ControlReportAMD64{}, "SegFs", 0xEE, offSCControlReport},
		{&CreateFile{}, "Handle", 0x20, 8},
		{&CreateFile{}, "Length", 0x28, 8},
		{&Context{}, "ContextFlags", offCtxContextFlags, 0},
		{&Context{}, "MxCsr", offCtxMxCsr, 0},
		{&Context{}, "SegCs", offCtxSegCs, 0},
		{&Context{}, "EFlags", offCtxEFlags, 0},
		{&Context{}, "Dr0", offCtxDr0, 0},
		{&Context{}, "Rax", offCtxRax, 0},
		{&Context{}, "Rsp", offCtxRsp, 0},
		{&Context{}, "R8", offCtxR8, 0},
		{&Context{}, "Rip", offCtxRip, 0},
		{&Context{}, "VectorControl", offCtxVectorControl, 0},
		{&Context{}, "LastExceptionFromRip", offCtxLastExceptionRip, 0},
		{&XMMSaveArea32{}, "MxCsr", 0x118 - offCtxFltSave, 0},
		{&KSpecialRegisters{}, "KernelDr0", offKSKernelDr0, 0},
		{&KSpecialRegisters{}, "KernelDr7", offKSKernelDr7, 0},
		{&KSpecialRegisters{}, "Tr", offKSTr, 0},
		{&KSpecialRegisters{}, "MxCsr", offKSMxCsr, 0},
		{&KSpecialRegisters{}, "DebugControl", offKSDebugControl, 0},
		{&KSpecialRegisters{}, "Cr8", offKSCr8, 0},
		{&KSpecialRegisters{}, "MsrGsBase", offKSMsrGsBase, 0},
		{&KSpecialRegisters{}, "MsrSyscallMask", offKSMsrSyscallMask, 0},
		{&KSpecialRegisters{}, "Xcr0", offKSXcr0, 0},
		{&KSpecialRegisters{}, "MsrFsBase", offKSMsrFsBase, 0},
	}
	for _, tc := range tests {
		t.Run(reflect.TypeOf(tc.v).Elem().Name()+"."+tc.field, func(t *testing.T) {
			require.Equal(t, tc.offset, tc.base+fieldOffset(t, tc.v, tc.field))
		})
	}
	// Nested descriptor tables: GDTR limit at 0x56 and base at 0x58, IDTR at 0x66/0x68.
	k := &KSpecialRegisters{Gdtr: DescriptorTable{Limit: 0x7F, Base: 0x1A9000}, Idtr: DescriptorTable{Limit: 0xFFF, Base: 0x1A9080}}
	b, err := k.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, uint16(0x7F), binary.LittleEndian.Uint16(b[0x56:]))
	require.Equal(t, uint64(0x1A9000), binary.LittleEndian.Uint64(b[0x58:]))
	require.Equal(t, uint16(0xFFF), binary.LittleEndian.Uint16(b[offKSIdtr+6:]))
	require.Equal(t, uint64(0x1A9080), binary.LittleEndian.Uint64(b[0x68:]))
}

// TestManipulateRoundTrip: for every API, random bytes decode and re-encode to the same bytes, and the
// decoded struct survives encode/decode unchanged.
func TestManipulateRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for api := APIReadVirtualMemory - 1; api <= APIMaximumManipulate; api++ {
		for _, dataLen := range []int{0, 1, 0x4D0, MaxManipulateData} {
			b := randomBytes(r, ManipulateSize+dataLen)
			binary.LittleEndian.PutUint32(b, api)
			m, err := DecodeManipulate(b)
			require.NoError(t, err)
			require.Equal(t, api, m.APINumber)
			if KnownAPI(api) {
				want, _ := UnionFor(api)
				require.IsType(t, want, m.U)
			} else {
				require.IsType(t, &RawUnion{}, m.U)
			}
			out, err := EncodeBody(m)
			require.NoError(t, err)
			require.Equal(t, b, out, APIName(api))
			m2, err := DecodeManipulate(out)
			require.NoError(t, err)
			require.Equal(t, m, m2)
		}
	}
	_, err := DecodeManipulate(make([]byte, ManipulateSize-1))
	require.ErrorIs(t, err, ErrShort)
	_, err = (&Manipulate{APINumber: APIReadVirtualMemory, Data: make([]byte, MaxManipulateData+1)}).MarshalBinary()
	require.Error(t, err)
}

// TestManipulateFieldsFromBytes checks typed fields against hand-placed bytes (the GetVersion layout of §4).
func TestManipulateFieldsFromBytes(t *testing.T) {
	v := DefaultGetVersion64(19041, 0xfffff80412200000, 0xfffff80412e2a2d0, 0xfffff80412a1b2c0)
	m, err := NewManipulate(APIGetVersion, v, nil)
	require.NoError(t, err)
	m.ProcessorLevel, m.Processor = 0xFFFF, 0xFFFF
	b, err := m.MarshalBinary()
	require.NoError(t, err)
	require.Len(t, b, ManipulateSize)
	require.Equal(t, uint32(0x3146), binary.LittleEndian.Uint32(b[0:]))
	require.Equal(t, uint16(19041), binary.LittleEndian.Uint16(b[0x12:]))
	require.Equal(t, []byte{6, 2, 7, 0, 0x64, 0x86, 12, 3, 0x31, 0}, b[0x14:0x1E])
	require.Equal(t, uint64(0xfffff80412200000), binary.LittleEndian.Uint64(b[0x20:]))
	require.Equal(t, uint64(0xfffff80412a1b2c0), binary.LittleEndian.Uint64(b[0x30:]))

	_, err = NewManipulate(APIGetVersion, &ReadMemory64{}, nil)
	require.Error(t, err)
	_, err = NewManipulate(0x3100, nil, nil)
	var ue *UnknownAPIError
	require.ErrorAs(t, err, &ue)

	req, err := NewManipulate(APIReadVirtualMemory, &ReadMemory64{TargetBaseAddress: 0x1000, TransferCount: 8}, nil)
	require.NoError(t, err)
	req.ReturnStatus = StatusPending
	rep := req.Reply(StatusSuccess)
	rep.U.(*ReadMemory64).ActualBytesRead = 8
	require.Equal(t, uint32(0), req.U.(*ReadMemory64).ActualBytesRead, "Reply must not alias the request union")
	require.Equal(t, StatusSuccess, rep.ReturnStatus)
}

func TestStateChangeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, state := range []uint32{StateChangeException, StateChangeLoadSymbols, StateChangeCommand,
		StateChangeException | AlternateStateChange, 0x4000} {
		for _, n := range []int{0, 12, MaxPayload - StateChangeSize} {
			b := randomBytes(r, StateChangeSize+n)
			binary.LittleEndian.PutUint32(b, state)
			sc, err := DecodeStateChange(b)
			require.NoError(t, err)
			out, err := EncodeBody(sc)
			require.NoError(t, err)
			require.Equal(t, b, out)
			sc2, err := DecodeStateChange(out)
			require.NoError(t, err)
			require.Equal(t, sc, sc2)
		}
	}
	_, err := DecodeStateChange(make([]byte, StateChangeSize-1))
	require.ErrorIs(t, err, ErrShort)

	// A break-in report built from typed fields lands at the reference offsets.
	sc := &StateChange{NewState: StateChangeException, ProcessorLevel: 6, NumberProcessors: 2, Thread: 0xffffd00012345080,
		ProgramCounter: 0xfffff80412345670,
		U:              &Exception64{ExceptionCode: StatusBreakpoint, ExceptionAddress: 0xfffff80412345670, NumberParameters: 1, FirstChance: 1},
		ControlReport: ControlReportAMD64{Dr6: 0xFFFF0FF0, Dr7: 0x400, EFlags: 0x202, InstructionCount: 16,
			ReportFlags: ReportIncludesSegs | ReportStandardCS, InstructionStream: [16]byte{0xcc, 0xc3}, SegCs: 0x10, SegDs: 0x2b, SegEs: 0x2b, SegFs: 0x53}}
	b, err := sc.MarshalBinary()
	require.NoError(t, err)
	require.Len(t, b, StateChangeSize)
	require.Equal(t, uint32(0x80000003), binary.LittleEndian.Uint32(b[0x20:]))
	require.Equal(t, uint64(0xfffff80412345670), binary.LittleEndian.Uint64(b[0x30:]))
	require.Equal(t, uint32(1), binary.LittleEndian.Uint32(b[0xB8:]))
	require.Equal(t, byte(0xcc), b[0xD8])
	require.Equal(t, uint16(0x53), binary.LittleEndian.Uint16(b[0xEE:]))
}

func TestIOBodiesRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	type codec struct {
		name   string
		fixed  int
		api    []uint32
		decode func([]byte) (any, error)
	}
	codecs := []codec{
		{"DebugIO", DebugIOSize, []uint32{APIPrintString, APIGetString}, func(b []byte) (any, error) { return DecodeDebugIO(b) }},
		{"TraceIO", TraceIOSize, []uint32{APIPrintTrace}, func(b []byte) (any, error) { return DecodeTraceIO(b) }},
		{"FileIO", FileIOSize, []uint32{APICreateFile, APIReadFile, APIWriteFile, APICloseFile, 0x3499}, func(b []byte) (any, error) { return DecodeFileIO(b) }},
		{"ControlRequest", ControlRequestSize, []uint32{APIRequestHardwareBp, APIReleaseHardwareBp}, func(b []byte) (any, error) { return DecodeControlRequest(b) }},
	}
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			for _, api := range c.api {
				for _, n := range []int{0, 7, MaxPayload - c.fixed} {
					b := randomBytes(r, c.fixed+n)
					binary.LittleEndian.PutUint32(b, api)
					v, err := c.decode(b)
					require.NoError(t, err)
					out, err := EncodeBody(v)
					require.NoError(t, err)
					require.Equal(t, b, out)
					v2, err := c.decode(out)
					require.NoError(t, err)
					require.Equal(t, v, v2)
				}
			}
			_, err := c.decode(make([]byte, c.fixed-1))
			require.ErrorIs(t, err, ErrShort)
		})
	}
	p := NewPrintString(1, "hello\n")
	b, err := p.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, uint32(6), binary.LittleEndian.Uint32(b[8:]))
	require.Equal(t, "hello\n", string(b[16:]))
}

func TestContextAndKSpecialRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	b := randomBytes(r, ContextSize)
	c, err := DecodeContext(b)
	require.NoError(t, err)
	out, err := c.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, b, out)
	require.Equal(t, binary.LittleEndian.Uint64(b[offCtxRip:]), c.Rip)
	require.Equal(t, binary.LittleEndian.Uint32(b[offCtxContextFlags:]), c.ContextFlags)
	require.Equal(t, b[0x1A0:0x1B0], c.FltSave.XMMRegisters[0][:])
	require.Equal(t, b[offCtxVectorRegister:offCtxVectorRegister+16], c.VectorRegister[0][:])
	c2, err := DecodeContext(out)
	require.NoError(t, err)
	require.Equal(t, c, c2)
	_, err = DecodeContext(b[:ContextSize-1])
	require.ErrorIs(t, err, ErrShort)
	_, err = DecodeContext(append(b, 0))
	require.ErrorIs(t, err, ErrMalformed)

	for _, size := range []int{KSpecialSizeWin7, KSpecialSizeWin8, KSpecialSizeWin10} {
		b := randomBytes(r, size)
		k, n, err := DecodeKSpecialRegisters(b)
		require.NoError(t, err)
		require.Equal(t, size, n)
		out, err := k.Encode(n)
		require.NoError(t, err)
		require.Equal(t, b, out)
		require.Equal(t, binary.LittleEndian.Uint64(b[0x10:]), k.Cr3)
		if size == KSpecialSizeWin7 {
			require.Zero(t, k.Xcr0)
		}
	}
	_, _, err = DecodeKSpecialRegisters(make([]byte, 0xD0))
	require.ErrorIs(t, err, ErrShort)
	_, _, err = DecodeKSpecialRegisters(make([]byte, 0xE8))
	require.ErrorIs(t, err, ErrMalformed)
}

func TestPacketCodec(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	data := randomBytes(r, 100)
	p := NewDataPacket(PacketTypeManipulate, 0x80800000, data)
	b, err := p.MarshalBinary()
	require.NoError(t, err)
	require.Len(t, b, HeaderSize+100)
	require.Equal(t, []byte{0x30, 0x30, 0x30, 0x30, 2, 0, 100, 0, 0, 0, 0x80, 0x80}, b[:12])
	q, err := DecodePacket(b)
	require.NoError(t, err)
	require.Equal(t, p, q)

	ack := NewControlPacket(PacketTypeAcknowledge, 0x80800001)
	b, err = ack.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, []byte{0x69, 0x69, 0x69, 0x69, 4, 0, 0, 0, 1, 0, 0x80, 0x80, 0, 0, 0, 0}, b)
	q, err = DecodePacket(b)
	require.NoError(t, err)
	require.Equal(t, ack, q)

	cc := NewConnCheckPacket(0xc0a80201)
	b, err = cc.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, []byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0xa8, 0xc0}, b)
	q, err = DecodePacket(b)
	require.NoError(t, err)
	require.True(t, q.IsConnCheck())
	require.Equal(t, cc, q)

	q, err = DecodePacket([]byte{0x62})
	require.NoError(t, err)
	require.True(t, q.IsBreakin())
	b, err = q.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, []byte{0x62}, b)

	good, err := NewDataPacket(PacketTypeManipulate, 1, data).MarshalBinary()
	require.NoError(t, err)
	bad := []struct {
		name string
		b    []byte
		is   error
	}{
		{"empty", nil, ErrShort},
		{"one byte", []byte{0x30}, ErrMalformed},
		{"short header", good[:10], ErrShort},
		{"truncated payload", good[:len(good)-1], ErrShort},
		{"extra byte", append(append([]byte{}, good...), 0xAA), ErrMalformed},
		{"bad leader", append([]byte{1, 2, 3, 4}, good[4:]...), ErrMalformed},
		{"bad checksum", func() []byte { c := append([]byte{}, good...); c[20]++; return c }(), ErrBadChecksum},
		{"oversize", func() []byte {
			c := NewDataPacket(2, 1, make([]byte, MaxPayload+1)).AppendHeader(nil)
			return c
		}(), ErrMalformed},
		{"control with payload", append(NewControlPacket(4, 1).AppendHeader(nil), 0), ErrMalformed},
		{"conncheck with count", []byte{0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3, 4}, ErrMalformed},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodePacket(tc.b)
			require.ErrorIs(t, err, tc.is)
		})
	}
	_, err = DecodePacket(bad[6].b)
	require.ErrorIs(t, err, ErrCorruptPacket)
	var ce *ChecksumError
	require.True(t, errors.As(err, &ce))
}

func TestBodyAndDescribe(t *testing.T) {
	m, err := NewManipulate(APIReadVirtualMemory, &ReadMemory64{TargetBaseAddress: 0xfffff78000000014, TransferCount: 0x80}, nil)
	require.NoError(t, err)
	m.ReturnStatus = StatusPending
	payload, err := EncodeBody(m)
	require.NoError(t, err)
	p := NewDataPacket(PacketTypeManipulate, 0x80000002, payload)
	body, err := p.Body()
	require.NoError(t, err)
	require.Equal(t, m, body)
	d := p.Describe()
	js, err := json.Marshal(d)
	require.NoError(t, err)
	require.JSONEq(t, `{"type":"PACKET_TYPE_KD_STATE_MANIPULATE","id":"0x80000002","byte_count":56,"checksum":"`+hex32(p.Checksum)+`",
		"api":"DbgKdReadVirtualMemoryApi","api_number":"0x3130","processor":0,"processor_level":0,"return_status":"0x103",
		"target_base_address":"0xfffff78000000014","transfer_count":128,"actual_bytes_read":0,"data_length":0}`, string(js))

	sc := &StateChange{NewState: StateChangeException, ProgramCounter: 0x9CF07E, Thread: 0x1234,
		U: &Exception64{ExceptionCode: StatusBreakpoint, ExceptionAddress: 0x9CF07D, NumberParameters: 1}}
	payload, err = EncodeBody(sc)
	require.NoError(t, err)
	d = NewDataPacket(PacketTypeStateChange64, 2, payload).Describe()
	require.Equal(t, "DbgKdExceptionStateChange", d["state"])
	require.Equal(t, "0x9cf07e", d["pc"])
	require.Equal(t, "0x9cf07d", d["exception_address"])
	require.Equal(t, "0x80000003", d["exception_code"])
	require.Equal(t, "0x1234", d["thread"])
	require.Contains(t, d, "control_report")

	ctl := NewControlPacket(PacketTypeResend, 0)
	body, err = ctl.Body()
	require.NoError(t, err)
	require.Nil(t, body)
	require.Equal(t, "PACKET_TYPE_KD_RESEND", ctl.Describe()["type"])

	_, err = NewDataPacket(PacketTypeStateChange32, 0, nil).Body()
	require.ErrorIs(t, err, ErrUnsupported)
	d = NewDataPacket(PacketTypeManipulate, 0, []byte{1, 2}).Describe()
	require.Contains(t, d["error"], "need 56 bytes")

	fio := &FileIO{APINumber: APICreateFile, Status: StatusNoSuchFile, U: &CreateFile{}, Data: []byte{'a', 0, 'b', 0, 0, 0}}
	payload, err = EncodeBody(fio)
	require.NoError(t, err)
	require.Equal(t, "ab", NewDataPacket(PacketTypeFileIO, 0, payload).Describe()["file_name"])
	require.Equal(t, "target_base_address", snake("TargetBaseAddress"))
	require.Equal(t, "dr7", snake("Dr7"))
	require.Equal(t, "msr_gs_base", snake("MsrGsBase"))
}

func TestNames(t *testing.T) {
	require.Equal(t, "DbgKdReadVirtualMemoryApi", APIName(0x3130))
	require.Equal(t, "DbgKdSetContextExApi", APIName(0x3160))
	require.Equal(t, "AlternateDbgKdExceptionStateChange", APIName(0x13030))
	require.Equal(t, "UnknownApi_0x9999", APIName(0x9999))
	require.Equal(t, "PACKET_TYPE_KD_STATE_CHANGE64", PacketTypeName(7))
	require.Equal(t, "PACKET_TYPE_0x20", PacketTypeName(0x20))
	require.True(t, NoReply(APIContinue2))
	require.False(t, NoReply(APIGetVersion))
	for api := APIReadVirtualMemory; api < APIMaximumManipulate; api++ {
		if api > APICauseBugCheck && api < APISwitchProcessor {
			continue // 0x314A..0x314F are unassigned
		}
		require.NotContains(t, APIName(api), "Unknown", "%#x", api)
		require.True(t, KnownAPI(api), "%#x", api)
	}
}
