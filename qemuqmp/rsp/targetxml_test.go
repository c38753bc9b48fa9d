package rsp

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// A self-made description in QEMU's shape: a main document including a core feature whose comments mention
// registers that do not exist.
const testMain = `<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target><architecture>i386:x86-64</architecture><xi:include href="core.xml"/></target>`

const testCore = `<?xml version="1.0"?>
<feature name="org.gnu.gdb.i386.core">
  <reg name="rax" bitsize="64" type="int64"/>
  <reg name="eflags" bitsize="32" type="i386_eflags"/>
  <!-- <reg name="cs_base" bitsize="64" type="int64"/> -->
  <reg name="cs" bitsize="32" type="int32"/>
  <reg name="st0" bitsize="80" type="i387_ext"/>
  <reg name="xmm0" bitsize="128" type="vec128" regnum="10"/>
  <reg name="mxcsr" bitsize="32" type="int"/>
</feature>`

func TestParseTargetXMLSkipsCommentsAndFollowsIncludes(t *testing.T) {
	tab, err := ParseTargetXML([]byte(testMain), func(annex string) ([]byte, error) {
		if annex != "core.xml" {
			return nil, errors.New("no such annex")
		}
		return []byte(testCore), nil
	})
	require.NoError(t, err)
	want := []Register{
		{"rax", 0, 64, 0}, {"eflags", 1, 32, 8}, {"cs", 2, 32, 12}, {"st0", 3, 80, 16},
		{"xmm0", 10, 128, 26}, {"mxcsr", 11, 32, 42},
	}
	require.Equal(t, want, tab.Regs)
	require.Equal(t, 46, tab.Size)
	_, ok := tab.Lookup("cs_base")
	require.False(t, ok, "commented-out register must not be picked up")
	r, ok := tab.Lookup("cs")
	require.True(t, ok)
	require.Equal(t, 2, r.Num)
}

func TestParseTargetXMLRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"empty":        ``,
		"no registers": `<target></target>`,
		"bad bitsize":  `<feature><reg name="a" bitsize="x"/></feature>`,
		"odd bitsize":  `<feature><reg name="a" bitsize="7"/></feature>`,
		"duplicate":    `<feature><reg name="a" bitsize="8"/><reg name="a" bitsize="8"/></feature>`,
		"same number":  `<feature><reg name="a" bitsize="8" regnum="1"/><reg name="b" bitsize="8" regnum="1"/></feature>`,
		"include loop": `<target><xi:include href="self.xml"/></target>`,
		"unclosed":     `<feature><reg name="a" bitsize="8">`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseTargetXML([]byte(doc), func(string) ([]byte, error) { return []byte(doc), nil })
			require.Error(t, err)
		})
	}
}

func FuzzParseTargetXML(f *testing.F) {
	f.Add([]byte(testMain), []byte(testCore))
	f.Add([]byte(testCore), []byte(""))
	f.Fuzz(func(t *testing.T, main, sub []byte) {
		tab, err := ParseTargetXML(main, func(string) ([]byte, error) { return sub, nil })
		if err != nil {
			return
		}
		end := 0
		for _, r := range tab.Regs {
			require.Positive(t, r.Bits)
			end = max(end, r.Offset+r.Bits/8)
		}
		require.Equal(t, tab.Size, end)
	})
}
