package kdproto

import (
	"encoding"
	"fmt"
)

// Body decodes the payload by packet type: *Manipulate, *StateChange, *DebugIO, *TraceIO, *FileIO or
// *ControlRequest; nil for control packets, break-ins and the connection check. 32-bit state changes and
// unknown types return an *UnsupportedTypeError.
func (p *Packet) Body() (any, error) {
	if !p.IsData() {
		return nil, nil
	}
	switch p.Type {
	case PacketTypeManipulate:
		return DecodeManipulate(p.Data)
	case PacketTypeStateChange64:
		return DecodeStateChange(p.Data)
	case PacketTypeDebugIO:
		return DecodeDebugIO(p.Data)
	case PacketTypeTraceIO:
		return DecodeTraceIO(p.Data)
	case PacketTypeFileIO:
		return DecodeFileIO(p.Data)
	case PacketTypeControlRequest:
		return DecodeControlRequest(p.Data)
	}
	return nil, &UnsupportedTypeError{Type: p.Type}
}

// EncodeBody encodes a typed body (anything Body returns, or any encoding.BinaryMarshaler such as *Context)
// back to payload bytes. A nil body encodes to no bytes.
func EncodeBody(v any) ([]byte, error) {
	switch b := v.(type) {
	case nil:
		return nil, nil
	case []byte:
		return b, nil
	case encoding.BinaryMarshaler:
		return b.MarshalBinary()
	}
	return nil, fmt.Errorf("encode body: unsupported type %T", v)
}

// BodyPacketType returns the packet type that carries a typed body.
func BodyPacketType(v any) (uint16, error) {
	switch v.(type) {
	case *Manipulate:
		return PacketTypeManipulate, nil
	case *StateChange:
		return PacketTypeStateChange64, nil
	case *DebugIO:
		return PacketTypeDebugIO, nil
	case *TraceIO:
		return PacketTypeTraceIO, nil
	case *FileIO:
		return PacketTypeFileIO, nil
	case *ControlRequest:
		return PacketTypeControlRequest, nil
	}
	return 0, fmt.Errorf("no packet type carries %T", v)
}
