package main

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// decimalFields stay JSON numbers; every other uint64 is written as a "0x…" string, because addresses exceed
// 2^53 and jq, JavaScript and many JSON libraries would silently round them.
var decimalFields = map[string]bool{"pid": true, "ppid": true, "tid": true}

// printJSON writes v as indented JSON with 64-bit values as hex strings.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(hexify(reflect.ValueOf(v), ""))
}

// hexify turns v into plain JSON-ready values (maps, slices, scalars), converting uint64 to hex strings.
func hexify(v reflect.Value, name string) any {
	if !v.IsValid() {
		return nil
	}
	if m, ok := v.Interface().(json.Marshaler); ok && v.Kind() != reflect.Pointer && v.Kind() != reflect.Struct {
		return m
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return hexify(v.Elem(), name)
	case reflect.Uint64:
		if decimalFields[name] {
			return v.Uint()
		}
		return fmt.Sprintf("%#x", v.Uint())
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return []any{}
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = hexify(v.Index(i), name)
		}
		return out
	case reflect.Map:
		out := map[string]any{}
		for _, k := range v.MapKeys() {
			out[fmt.Sprint(k.Interface())] = hexify(v.MapIndex(k), fmt.Sprint(k.Interface()))
		}
		return out
	case reflect.Struct:
		if m, ok := v.Interface().(json.Marshaler); ok { // time.Time and friends
			return m
		}
		out := map[string]any{}
		hexifyFields(v, out)
		return out
	default:
		return v.Interface()
	}
}

// hexifyFields adds the exported fields of struct v to out, honouring json tags and flattening embedded structs.
func hexifyFields(v reflect.Value, out map[string]any) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		fv := v.Field(i)
		if f.Anonymous && name == "" && fv.Kind() == reflect.Struct {
			hexifyFields(fv, out)
			continue
		}
		if name == "" {
			name = f.Name
		}
		if (strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero")) && fv.IsZero() {
			continue
		}
		out[name] = hexify(fv, name)
	}
}
