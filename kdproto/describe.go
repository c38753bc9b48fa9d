package kdproto

import (
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf16"
)

// Describe returns a JSON-ready view of the packet for tools such as `kdstub kdnet decode`: "type" (name),
// "id", and the decoded body's fields. Addresses and register-like values are "0x…" strings, lengths and
// counts are numbers. A body that fails to decode yields "error" plus the raw payload length.
func (p *Packet) Describe() map[string]any {
	d := map[string]any{}
	switch {
	case p.IsBreakin():
		d["type"] = "BREAKIN"
		return d
	case p.IsConnCheck():
		d["type"] = PacketTypeName(p.Type)
		d["conncheck"] = true
		d["id"] = hex32(p.ID)
		return d
	}
	d["type"] = PacketTypeName(p.Type)
	d["id"] = hex32(p.ID)
	if p.IsControl() {
		d["control"] = true
		return d
	}
	d["byte_count"] = len(p.Data)
	d["checksum"] = hex32(p.Checksum)
	if !p.ChecksumOK() {
		d["checksum_ok"] = false
	}
	body, err := p.Body()
	if err != nil {
		d["error"] = err.Error()
		return d
	}
	switch b := body.(type) {
	case *Manipulate:
		describeManipulate(d, b)
	case *StateChange:
		describeStateChange(d, b)
	case *DebugIO:
		d["api"] = APIName(b.APINumber)
		d["processor"] = b.Processor
		d["processor_level"] = b.ProcessorLevel
		d["length"] = b.Length
		if b.APINumber == APIGetString {
			d["length_read"] = b.LengthRead
		}
		d["text"] = string(b.Data)
	case *TraceIO:
		d["api"] = APIName(b.APINumber)
		d["processor"] = b.Processor
		d["length_of_data"] = b.LengthOfData
		d["data_length"] = len(b.Data)
	case *FileIO:
		d["api"] = APIName(b.APINumber)
		d["status"] = hex32(b.Status)
		describeStruct(d, b.U)
		d["data_length"] = len(b.Data)
		if b.APINumber == APICreateFile {
			d["file_name"] = utf16z(b.Data)
		}
	case *ControlRequest:
		d["api"] = APIName(b.APINumber)
		describeStruct(d, b)
	}
	return d
}

func describeManipulate(d map[string]any, m *Manipulate) {
	d["api"] = APIName(m.APINumber)
	d["api_number"] = hex32(m.APINumber)
	d["processor"] = m.Processor
	d["processor_level"] = m.ProcessorLevel
	d["return_status"] = hex32(m.ReturnStatus)
	if m.U != nil {
		if _, raw := m.U.(*RawUnion); !raw {
			describeStruct(d, m.U)
		}
	}
	d["data_length"] = len(m.Data)
}

func describeStateChange(d map[string]any, sc *StateChange) {
	d["state"] = StateName(sc.NewState)
	d["processor"] = sc.Processor
	d["processor_level"] = sc.ProcessorLevel
	d["number_processors"] = sc.NumberProcessors
	d["thread"] = hex64(sc.Thread)
	d["pc"] = hex64(sc.ProgramCounter)
	switch u := sc.U.(type) {
	case *Exception64:
		d["exception_code"] = hex32(u.ExceptionCode)
		d["exception_flags"] = hex32(u.ExceptionFlags)
		d["exception_address"] = hex64(u.ExceptionAddress)
		d["number_parameters"] = u.NumberParameters
		n := min(int(u.NumberParameters), len(u.ExceptionInformation))
		info := make([]string, 0, n)
		for _, v := range u.ExceptionInformation[:n] {
			info = append(info, hex64(v))
		}
		d["exception_information"] = info
		d["first_chance"] = u.FirstChance
	case *LoadSymbols64, *CommandString64:
		describeStruct(d, u)
	}
	cr := map[string]any{}
	describeStruct(cr, &sc.ControlReport)
	d["control_report"] = cr
	d["data_length"] = len(sc.Data)
	if len(sc.Data) > 0 {
		d["data_text"] = strings.TrimRight(string(sc.Data), "\x00")
	}
}

// describeStruct adds the exported fields of a struct (or pointer to one) to d under snake_case names.
// Tag kd:"-" skips padding, kd:"addr"/kd:"hex" render as 0x strings, kd:"bytes" renders hex bytes.
func describeStruct(d map[string]any, v any) {
	rv := reflect.Indirect(reflect.ValueOf(v))
	if rv.Kind() != reflect.Struct {
		return
	}
	rt := rv.Type()
	for i := range rt.NumField() {
		f := rt.Field(i)
		tag := f.Tag.Get("kd")
		if !f.IsExported() || tag == "-" || tag == "raw" || f.Name == "Data" || f.Name == "APINumber" {
			continue
		}
		fv := rv.Field(i)
		name := snake(f.Name)
		switch {
		case tag == "bytes" && fv.Kind() == reflect.Array:
			b := make([]byte, fv.Len())
			reflect.Copy(reflect.ValueOf(b), fv)
			d[name] = hex.EncodeToString(b)
		case (tag == "hex" || tag == "addr") && fv.CanUint():
			d[name] = fmt.Sprintf("%#x", fv.Uint())
		case fv.CanUint():
			d[name] = fv.Uint()
		}
	}
}

func hex32(v uint32) string { return fmt.Sprintf("%#x", v) }
func hex64(v uint64) string { return fmt.Sprintf("%#x", v) }

// snake converts a Go field name (TargetBaseAddress, Dr7, SegCs) to snake_case (target_base_address, dr7, seg_cs).
func snake(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i, c := range r {
		if unicode.IsUpper(c) {
			if i > 0 && (unicode.IsLower(r[i-1]) || (i+1 < len(r) && unicode.IsLower(r[i+1]) && unicode.IsUpper(r[i-1]))) {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(c))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// utf16z decodes a little-endian UTF-16 string up to its NUL (bounded by the input length).
func utf16z(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := uint16(b[i]) | uint16(b[i+1])<<8
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}
