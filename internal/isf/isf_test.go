package isf

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/ulikunitz/xz"

	"github.com/kdstub/kdstub/internal/shareddata"
)

// sharedFiles lists the five shared ISF files with facts quoted in windows-internals.md §6 and §9.2,
// which were established independently of this reader.
var sharedFiles = []struct {
	file       string
	build      uint32
	version    string
	guid       string
	kdbg       uint64 // KdDebuggerDataBlock RVA (0 = not quoted in the docs)
	apcProcess uint32 // _KTHREAD.ApcState.Process
	eprocess   uint32 // sizeof(_EPROCESS)
	kpcr       uint32 // sizeof(_KPCR)
}{
	{"ntkrnlmp-6.1.7601.24540-339E74133576439CBCDF7E0229DA3773-1.json.xz", 7601, "6.1.7601.24540", "339E74133576439CBCDF7E0229DA3773", 0x1E2130, 0x70, 0x4F8, 0x7080},
	{"ntkrnlmp-10.0.17763.437-8CFB49428DC86A330CE257778E0C2F93-1.json.xz", 17763, "10.0.17763.437", "8CFB49428DC86A330CE257778E0C2F93", 0x3FF5E0, 0xB8, 0x850, 0x8040},
	{"ntkrnlmp-10.0.18362.836-DCA4AD4BEEB4746D48F84C0125019E43-1.json.xz", 18362, "10.0.18362.836", "DCA4AD4BEEB4746D48F84C0125019E43", 0, 0xB8, 0x880, 0x9080},
	{"ntkrnlmp-10.0.19041.3570-606FF669409B00F7FC8C61A9C1670129-1.json.xz", 19041, "10.0.19041.3570", "606FF669409B00F7FC8C61A9C1670129", 0xC00B20, 0xB8, 0xA40, 0xB080},
	{"ntkrnlmp-10.0.22000.2538-0CE4A95C0CD782A7596B034D8648E585-1.json.xz", 22000, "10.0.22000.2538", "0CE4A95C0CD782A7596B034D8648E585", 0xC02190, 0xB8, 0xB80, 0xC080},
}

func TestLoadSharedFiles(t *testing.T) {
	for _, tc := range sharedFiles {
		t.Run(tc.version, func(t *testing.T) {
			tab, err := Load(shareddata.Require(t, "testdata/symbols/"+tc.file))
			require.NoError(t, err)
			require.Equal(t, Metadata{
				Format: "6.1.0", Database: "ntkrnlmp.pdb", GUID: tc.guid, Age: 1, Machine: 0x8664,
				Version: tc.version, Build: tc.build,
			}, tab.Meta)

			rva, ok := tab.Symbol("KdDebuggerDataBlock")
			require.True(t, ok)
			if tc.kdbg != 0 {
				require.Equal(t, tc.kdbg, rva)
			} else {
				require.NotZero(t, rva)
			}
			_, ok = tab.Symbol("NoSuchSymbolAnywhere")
			require.False(t, ok)

			off, err := tab.Offset("_KTHREAD.ApcState.Process")
			require.NoError(t, err)
			require.Equal(t, tc.apcProcess, off)
			off, err = tab.Offset("_EPROCESS.Pcb.DirectoryTableBase")
			require.NoError(t, err)
			require.Equal(t, uint32(0x28), off)
			off, err = tab.Offset("_KPCR.Prcb.CurrentThread")
			require.NoError(t, err)
			require.Equal(t, uint32(0x188), off, "gs:[0x188] is the current thread on every x64 build")

			sz, err := tab.Size("_EPROCESS")
			require.NoError(t, err)
			require.Equal(t, tc.eprocess, sz)
			sz, err = tab.Size("_KPCR")
			require.NoError(t, err)
			require.Equal(t, tc.kpcr, sz)
			sz, err = tab.Size("_CONTEXT")
			require.NoError(t, err)
			require.Equal(t, uint32(0x4D0), sz)
			sz, err = tab.Size("_DBGKD_GET_VERSION64")
			require.NoError(t, err)
			require.Equal(t, uint32(0x28), sz)

			ty, ok := tab.Type("_LIST_ENTRY")
			require.True(t, ok)
			require.Equal(t, uint32(0x10), ty.Size)
			require.Equal(t, []string{"Flink", "Blink"}, ty.FieldNames())

			if tc.build == 19041 {
				t.Run("resolve", func(t *testing.T) { checkResolveAndRefSize(t, tab) })
				t.Run("offset errors", func(t *testing.T) { checkOffsetErrors(t, tab) })
			}
		})
	}
}

// checkResolveAndRefSize runs on the 19041 table (loaded once by TestLoadSharedFiles; loading is slow
// under the race detector).
func checkResolveAndRefSize(t *testing.T, tab *Table) {

	f, err := tab.Resolve("_KPRCB.VendorString")
	require.NoError(t, err)
	require.Equal(t, uint32(0x8590), f.Offset)
	require.Equal(t, KindArray, f.Type.Kind)
	n, err := tab.RefSize(f.Type)
	require.NoError(t, err)
	require.Equal(t, uint32(13), n)

	f, err = tab.Resolve("_ETHREAD.Cid.UniqueThread")
	require.NoError(t, err)
	require.Equal(t, uint32(0x478+8), f.Offset)
	require.Equal(t, KindPointer, f.Type.Kind)
	n, err = tab.RefSize(f.Type)
	require.NoError(t, err)
	require.Equal(t, uint32(8), n)

	f, err = tab.Resolve("_KTHREAD.State")
	require.NoError(t, err)
	n, err = tab.RefSize(f.Type)
	require.NoError(t, err)
	require.Equal(t, uint32(1), n)

	bt, ok := tab.BaseType("unsigned long")
	require.True(t, ok)
	require.Equal(t, uint32(4), bt.Size)
	require.NotEmpty(t, tab.SymbolNames())
}

func checkOffsetErrors(t *testing.T, tab *Table) {
	for i, tc := range []struct {
		path     string
		notFound bool
		msg      string
	}{
		{"_NO_SUCH_TYPE.Field", true, `type "_NO_SUCH_TYPE"`},
		{"_EPROCESS.NoSuchField", true, `no field "NoSuchField"`},
		{"_KTHREAD.ApcState.NoSuchField", true, `_KAPC_STATE has no field`},
		{"_KTHREAD.Teb.Something", false, "is a pointer, not a struct"},
		{"_EPROCESS", false, "want Type.Field"},
		{"", false, "want Type.Field"},
		{"_EPROCESS..Peb", true, `no field ""`},
		{strings.Repeat("_EPROCESS.", 100) + "Peb", false, "components"},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			_, err := tab.Offset(tc.path)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.msg)
			if tc.notFound {
				require.ErrorIs(t, err, ErrNotFound)
			} else {
				require.NotErrorIs(t, err, ErrNotFound)
			}
		})
	}
	_, err := tab.Size("_NO_SUCH_TYPE")
	require.ErrorIs(t, err, ErrNotFound)
}

const minimal = `{"metadata":{"format":"6.1.0","windows":{"pdb":{"GUID":"00112233445566778899aabbccddeeff","age":2,"database":"x.pdb","machine_type":34404}}},
 "symbols":{"G":{"address":4096}},
 "base_types":{"pointer":{"kind":"int","size":8,"signed":false},"unsigned char":{"kind":"char","size":1,"signed":false}},
 "enums":{},
 "user_types":{"_A":{"kind":"struct","size":16,"fields":{"B":{"offset":8,"type":{"kind":"struct","name":"_B"}}}},
   "_B":{"kind":"struct","size":8,"fields":{"P":{"offset":0,"type":{"kind":"pointer","subtype":{"kind":"base","name":"void"}}},
     "F":{"offset":4,"type":{"kind":"bitfield","bit_position":1,"bit_length":3,"type":{"kind":"base","name":"unsigned char"}}}}}}}`

func TestParseMinimal(t *testing.T) {
	tab, err := ParseBytes([]byte(minimal))
	require.NoError(t, err)
	require.Equal(t, "00112233445566778899AABBCCDDEEFF", tab.Meta.GUID)
	require.Equal(t, uint32(2), tab.Meta.Age)
	off, err := tab.Offset("_A.B.F")
	require.NoError(t, err)
	require.Equal(t, uint32(12), off)
	f, err := tab.Resolve("_A.B.F")
	require.NoError(t, err)
	require.Equal(t, uint32(1), f.Type.BitPosition)
	require.Equal(t, uint32(3), f.Type.BitLength)
	n, err := tab.RefSize(f.Type)
	require.NoError(t, err)
	require.Equal(t, uint32(1), n)
	rva, ok := tab.Symbol("G")
	require.True(t, ok)
	require.Equal(t, uint64(4096), rva)
}

func TestParseRejectsBadInput(t *testing.T) {
	rep := func(old, new string) string {
		require.Contains(t, minimal, old)
		return strings.Replace(minimal, old, new, 1)
	}
	for _, tc := range []struct {
		name, json, msg string
	}{
		{"not json", "{", "decode JSON"},
		{"empty", "", "decode JSON"},
		{"array", "[]", "decode JSON"},
		{"no metadata", `{"symbols":{}}`, "no metadata"},
		{"nothing", `{"metadata":{}}`, "neither symbols nor user_types"},
		{"negative offset", rep(`"offset":8`, `"offset":-8`), "_A.B offset"},
		{"float offset", rep(`"offset":8`, `"offset":8.5`), "_A.B offset"},
		{"huge size", rep(`"size":16`, `"size":99999999999`), "size"},
		{"string size", rep(`"size":16`, `"size":"sixteen"`), "decode JSON"},
		{"missing size", rep(`"size":16,`, ``), "missing number"},
		{"unknown kind", rep(`"kind":"pointer","subtype"`, `"kind":"weird","subtype"`), `unknown type kind "weird"`},
		{"pointer without subtype", rep(`"subtype":{"kind":"base","name":"void"}`, `"x":1`), "pointer without subtype"},
		{"bitfield too long", rep(`"bit_length":3`, `"bit_length":99`), "bitfield position"},
		{"bitfield without type", rep(`"type":{"kind":"base","name":"unsigned char"}`, `"x":0`), "bitfield without type"},
		{"user type kind", rep(`"_A":{"kind":"struct"`, `"_A":{"kind":"base"`), `has kind "base"`},
		{"struct ref without name", rep(`{"kind":"struct","name":"_B"}`, `{"kind":"struct"}`), "without a name"},
		{"field without type", rep(`"offset":8,"type":{"kind":"struct","name":"_B"}`, `"offset":8`), "has no type"},
		{"bad guid", rep(`00112233445566778899aabbccddeeff`, `xyz`), "not 32 hex digits"},
		{"negative address", rep(`"address":4096`, `"address":-1`), "symbol \"G\" address"},
		{"machine overflow", rep(`"machine_type":34404`, `"machine_type":70000`), "machine_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseBytes([]byte(tc.json))
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.msg)
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "missing.json.xz"))
	require.ErrorIs(t, err, os.ErrNotExist)

	notXZ := filepath.Join(dir, "bad.json.xz")
	require.NoError(t, os.WriteFile(notXZ, []byte("not xz at all"), 0o600))
	_, err = Load(notXZ)
	require.ErrorContains(t, err, "xz")

	// A JPCERTCC-style name whose GUID disagrees with the metadata is a mislabelled file.
	wrong := filepath.Join(dir, "ntkrnlmp-10.0.19041.1-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF-2.json")
	require.NoError(t, os.WriteFile(wrong, []byte(minimal), 0o600))
	_, err = Load(wrong)
	require.ErrorContains(t, err, "differs from metadata GUID")

	wrongAge := filepath.Join(dir, "ntkrnlmp-10.0.19041.1-00112233445566778899AABBCCDDEEFF-7.json")
	require.NoError(t, os.WriteFile(wrongAge, []byte(minimal), 0o600))
	_, err = Load(wrongAge)
	require.ErrorContains(t, err, "age 7 differs")

	good := filepath.Join(dir, "ntkrnlmp-10.0.19041.1-00112233445566778899AABBCCDDEEFF-2.json")
	require.NoError(t, os.WriteFile(good, []byte(minimal), 0o600))
	tab, err := Load(good)
	require.NoError(t, err)
	require.Equal(t, uint32(19041), tab.Meta.Build)
	require.Equal(t, "10.0.19041.1", tab.Meta.Version)

	other := filepath.Join(dir, "custom.json")
	require.NoError(t, os.WriteFile(other, []byte(minimal), 0o600))
	tab, err = Load(other)
	require.NoError(t, err)
	require.Zero(t, tab.Meta.Build, "no build without a conventional file name")
}

// BenchmarkLoad19041 reports Load's cost as a multiple of the bare xz decompression of the same
// file (the floor any reader of .json.xz pays), both measured in this run.
func BenchmarkLoad19041(b *testing.B) {
	p := shareddata.Require(b, "testdata/symbols/"+sharedFiles[3].file)
	start := time.Now()
	const rawRounds = 2
	for range rawRounds {
		f, err := os.Open(p)
		require.NoError(b, err)
		xr, err := xz.NewReader(bufio.NewReader(f))
		require.NoError(b, err)
		_, err = io.Copy(io.Discard, xr)
		require.NoError(b, err)
		f.Close()
	}
	raw := time.Since(start) / rawRounds
	b.ResetTimer()
	for b.Loop() {
		if _, err := Load(p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(raw), "x-xz-decode")
}
