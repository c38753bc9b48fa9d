package isf

import (
	"testing"
)

// FuzzParse feeds arbitrary bytes to the JSON→Table conversion and then exercises every lookup on
// whatever table comes out: nothing may panic, however hostile the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(`{"metadata":{},"user_types":{"_S":{"kind":"struct","size":4,"fields":{"S":{"offset":0,"type":{"kind":"struct","name":"_S"}}}}}}`))
	f.Add([]byte(`{"metadata":{},"user_types":{"_A":{"kind":"union","size":8,"fields":{"X":{"offset":4294967295,"type":{"kind":"array","count":4294967295,"subtype":{"kind":"array","count":2,"subtype":{"kind":"base","name":"int"}}}}}}},"base_types":{"int":{"kind":"int","size":4}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := ParseBytes(data)
		if err != nil {
			return
		}
		for name, ty := range tab.types {
			_, _ = tab.Size(name)
			for fn, fld := range ty.Fields {
				_, _ = tab.RefSize(fld.Type)
				_, _ = tab.Offset(name + "." + fn)
				if next, ok := tab.types[fld.Type.Name]; ok {
					for sub := range next.Fields {
						_, _ = tab.Offset(name + "." + fn + "." + sub)
						_, _ = tab.Offset(name + "." + fn + "." + sub + "." + fn)
					}
				}
			}
			_ = ty.FieldNames()
		}
		_ = tab.SymbolNames()
	})
}
