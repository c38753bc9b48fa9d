package kdproto

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// seedManipulate is a self-made ReadVirtualMemory request.
func seedManipulate() []byte {
	m, _ := NewManipulate(APIReadVirtualMemory, &ReadMemory64{TargetBaseAddress: 0xfffff78000000000, TransferCount: 0x80}, []byte{1, 2, 3})
	b, _ := m.MarshalBinary()
	return b
}

func seedStateChange() []byte {
	sc := &StateChange{NewState: StateChangeLoadSymbols, U: &LoadSymbols64{PathNameLength: 4, BaseOfDll: 0x1000}, Data: []byte("abc\x00")}
	b, _ := sc.MarshalBinary()
	return b
}

func FuzzDecodePacket(f *testing.F) {
	f.Add([]byte{0x62})
	f.Add(NewControlPacket(PacketTypeAcknowledge, 0x80800000).AppendHeader(nil))
	f.Add(NewDataPacket(PacketTypeManipulate, 0x80000002, seedManipulate()).AppendHeader(nil))
	cc, _ := NewConnCheckPacket(0xc0a80201).MarshalBinary()
	f.Add(cc)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePacket(b)
		if err != nil {
			return
		}
		out, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encode decoded packet: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip changed bytes:\n in %x\nout %x", b, out)
		}
		_ = p.Describe()
		if body, err := p.Body(); err == nil && body != nil {
			enc, err := EncodeBody(body)
			if err != nil {
				t.Fatalf("re-encode body: %v", err)
			}
			if !bytes.Equal(enc, p.Data) {
				t.Fatalf("body round trip changed bytes")
			}
		}
	})
}

// fuzzRoundTrip checks decode → encode is the identity on every input the decoder accepts.
func fuzzRoundTrip[T interface{ MarshalBinary() ([]byte, error) }](t *testing.T, b []byte, decode func([]byte) (T, error)) {
	v, err := decode(b)
	if err != nil {
		return
	}
	out, err := v.MarshalBinary()
	if err != nil {
		if len(b) > MaxPayload {
			return // oversize bodies cannot travel in one packet; refusing them is correct
		}
		t.Fatalf("re-encode: %v", err)
	}
	if !bytes.Equal(out, b) {
		t.Fatalf("round trip changed bytes:\n in %x\nout %x", b, out)
	}
}

func FuzzManipulate(f *testing.F) {
	f.Add(seedManipulate())
	b := make([]byte, ManipulateSize)
	binary.LittleEndian.PutUint32(b, APIContinue2)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzRoundTrip(t, b, DecodeManipulate)
		if m, err := DecodeManipulate(b); err == nil {
			_ = m.Reply(StatusSuccess)
		}
	})
}

func FuzzStateChange(f *testing.F) {
	f.Add(seedStateChange())
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRoundTrip(t, b, DecodeStateChange) })
}

func FuzzDebugIO(f *testing.F) {
	b, _ := NewPrintString(0, "hello\n").MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRoundTrip(t, b, DecodeDebugIO) })
}

func FuzzFileIO(f *testing.F) {
	b, _ := (&FileIO{APINumber: APICreateFile, U: &CreateFile{}, Data: []byte{'x', 0, 0, 0}}).MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRoundTrip(t, b, DecodeFileIO) })
}

func FuzzTraceIO(f *testing.F) {
	b, _ := (&TraceIO{APINumber: APIPrintTrace, LengthOfData: 2, Data: []byte{1, 2}}).MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRoundTrip(t, b, DecodeTraceIO) })
}

func FuzzControlRequest(f *testing.F) {
	b, _ := (&ControlRequest{APINumber: APIRequestHardwareBp, HardwareBreakPointNumber: 1}).MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) { fuzzRoundTrip(t, b, DecodeControlRequest) })
}

// FuzzContext checks the decoder on the raw input (any length) and the round trip on a full-size record
// whose head is the input: the fuzzer stalls on 1232-byte inputs, so inputs stay short and are padded.
func FuzzContext(f *testing.F) {
	b, _ := (&Context{ContextFlags: ContextAll, Rip: 0xfffff80412345670, SegCs: 0x10}).MarshalBinary()
	f.Add(b[:0x100])
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzRoundTrip(t, b, DecodeContext)
		full := make([]byte, ContextSize)
		copy(full, b)
		if len(b) > ContextSize {
			copy(full, b[len(b)-ContextSize:])
		}
		fuzzRoundTrip(t, full, DecodeContext)
		if _, err := DecodeContext(full); err != nil {
			t.Fatalf("full-size record rejected: %v", err)
		}
	})
}

func FuzzKSpecialRegisters(f *testing.F) {
	k := &KSpecialRegisters{Cr0: 0x80050033, Cr3: 0x1ad000, Cr4: 0x350ef8}
	for _, n := range []int{KSpecialSizeWin7, KSpecialSizeWin8, KSpecialSizeWin10} {
		b, _ := k.Encode(n)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, n, err := DecodeKSpecialRegisters(b)
		if err != nil {
			return
		}
		out, err := k.Encode(n)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip changed bytes")
		}
	})
}
