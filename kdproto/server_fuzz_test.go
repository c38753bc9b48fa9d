package kdproto

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"testing"
)

// echoTarget answers everything from arithmetic on its inputs, so the fuzzer exercises the server's
// request parsing and response building rather than a debuggee. Addresses with bit 12 set fail halfway.
type echoTarget struct{}

func (echoTarget) NumberProcessors() int { return 2 }
func (echoTarget) GetVersion(context.Context) (*GetVersion64, error) {
	return DefaultGetVersion64(19041, 1, 2, 3), nil
}
func fill(addr uint64, buf []byte) (int, error) {
	n := len(buf)
	if addr&0x1000 != 0 {
		n /= 2
	}
	for i := range buf[:n] {
		buf[i] = byte(addr) + byte(i)
	}
	if n < len(buf) {
		return n, errors.New("half")
	}
	return n, nil
}
func (echoTarget) ReadVirtual(_ context.Context, _ int, va uint64, b []byte) (int, error) {
	return fill(va, b)
}
func (echoTarget) WriteVirtual(_ context.Context, _ int, _ uint64, d []byte) (int, error) {
	return len(d), nil
}
func (echoTarget) ReadPhysical(_ context.Context, pa uint64, b []byte) (int, error) {
	return fill(pa, b)
}
func (echoTarget) WritePhysical(_ context.Context, _ uint64, d []byte) (int, error) {
	return len(d), nil
}
func (echoTarget) QueryMemory(context.Context, int, uint64) (uint32, uint32, error) { return 2, 7, nil }
func (echoTarget) SearchMemory(_ context.Context, _ int, s, l uint64, p []byte) (uint64, error) {
	if len(p) == 0 || l == 0 {
		return 0, ErrNotFound
	}
	return s + l/2, nil
}
func (echoTarget) FillMemory(_ context.Context, _ int, _ uint64, l uint32, _ bool, _ []byte) (uint32, error) {
	return l, nil
}
func (echoTarget) GetContext(_ context.Context, cpu int) (*Context, error) {
	if cpu > 1 {
		return nil, NewStatusError(StatusUnsuccessful, errors.New("cpu"))
	}
	return &Context{ContextFlags: ContextAll, Rip: uint64(cpu)}, nil
}
func (echoTarget) SetContext(context.Context, int, *Context) error { return nil }
func (echoTarget) ReadControlSpace(_ context.Context, _ int, a uint64, b []byte) (int, error) {
	if a > 3 {
		return 0, ErrNotSupported
	}
	n := min(len(b), 0xF0)
	return fill(a, b[:n])
}
func (echoTarget) WriteControlSpace(_ context.Context, _ int, _ uint64, d []byte) (int, error) {
	return len(d), nil
}
func (echoTarget) ReadMSR(_ context.Context, _ int, m uint32) (uint64, error) {
	return uint64(m) << 8, nil
}
func (echoTarget) WriteMSR(context.Context, int, uint32, uint64) error { return ErrNotSupported }
func (echoTarget) ReadIoSpace(_ context.Context, _ int, io IoAccess) (uint32, error) {
	return uint32(io.Address), nil
}
func (echoTarget) WriteIoSpace(context.Context, int, IoAccess) error { return nil }
func (echoTarget) GetBusData(_ context.Context, _ BusAccess, b []byte) (int, error) {
	return len(b), nil
}
func (echoTarget) SetBusData(_ context.Context, _ BusAccess, d []byte) (int, error) {
	return len(d), nil
}
func (echoTarget) WriteBreakpoint(_ context.Context, va uint64) (uint32, error) {
	return uint32(va%32) + 1, nil
}
func (echoTarget) RestoreBreakpoint(_ context.Context, h uint32) error {
	if h == 0 || h > 32 {
		return ErrNotSupported
	}
	return nil
}
func (echoTarget) Continue(context.Context, ContinueRequest) error { return nil }
func (echoTarget) Break(context.Context) error                     { return nil }
func (echoTarget) WaitStop(context.Context) (*StateChange, error)  { return &StateChange{}, nil }
func (echoTarget) Stopped(context.Context) (*StateChange, error)   { return nil, nil }
func (echoTarget) SwitchProcessor(context.Context, int) (*StateChange, error) {
	return &StateChange{}, nil
}

// FuzzServerAnswer feeds hostile manipulate requests to the server's dispatcher: it must never panic, and
// every response must keep the ApiNumber, carry at most 3944 data bytes and encode.
func FuzzServerAnswer(f *testing.F) {
	for _, api := range []uint32{APIReadVirtualMemory, APIGetContextEx, APISetContextEx, APIWriteBreakPointEx,
		APIRestoreBreakPointEx, APISearchMemory, APIFillMemory, APIGetBusData, APIReadControlSpace, 0x3199} {
		b := make([]byte, ManipulateSize+32)
		binary.LittleEndian.PutUint32(b, api)
		binary.LittleEndian.PutUint32(b[0x10:], 0x10)
		binary.LittleEndian.PutUint32(b[0x14:], 0x20)
		f.Add(b)
	}
	st := &serveState{srv: &Server{Target: echoTarget{}}, log: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManipulate(data)
		if err != nil || NoReply(m.APINumber) {
			return
		}
		r := st.answer(context.Background(), m)
		if r.APINumber != m.APINumber {
			t.Fatalf("response api %#x for request %#x", r.APINumber, m.APINumber)
		}
		if len(r.Data) > MaxManipulateData {
			t.Fatalf("%s: %d data bytes", APIName(m.APINumber), len(r.Data))
		}
		if _, err := r.MarshalBinary(); err != nil {
			t.Fatalf("%s: response does not encode: %v", APIName(m.APINumber), err)
		}
	})
}
