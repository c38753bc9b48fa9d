package kdbg

import (
	"encoding/binary"
	"math/rand"
	"os"
	"testing"

	"github.com/kdstub/kdstub/internal/shareddata"
	"github.com/stretchr/testify/require"
)

// triageKDBG reads the decoded KDBG copy of the shared triage dump (file offset 0x104A8, windows-internals §9.1).
func triageKDBG(t testing.TB) Block {
	t.Helper()
	data, err := os.ReadFile(shareddata.Require(t, "testdata/dumps/win10-19041-x64-triage.dmp"))
	require.NoError(t, err)
	const off = 0x104A8
	require.Greater(t, len(data), off+0x18)
	size := binary.LittleEndian.Uint32(data[off+OffSize:])
	require.LessOrEqual(t, off+int(size), len(data))
	return Block(append([]byte(nil), data[off:off+int(size)]...))
}

func syntheticBlock(size uint32, kernBase uint64, r *rand.Rand) Block {
	b := make(Block, size)
	r.Read(b)
	binary.LittleEndian.PutUint64(b[OffListFlink:], kernBase+0xC40770)
	binary.LittleEndian.PutUint64(b[OffListBlink:], kernBase+0xC40770)
	binary.LittleEndian.PutUint32(b[OffOwnerTag:], Tag)
	binary.LittleEndian.PutUint32(b[OffSize:], size)
	binary.LittleEndian.PutUint64(b[OffKernBase:], kernBase)
	binary.LittleEndian.PutUint64(b[OffPsLoadedModuleList:], kernBase+0xC2A390)
	binary.LittleEndian.PutUint64(b[OffPsActiveProcessHead:], kernBase+0xC1E200)
	binary.LittleEndian.PutUint16(b[OffOffsetPcrContainedPrcb:], 0x180)
	return b
}

func randomKeys(r *rand.Rand, kernBase uint64) Keys {
	return Keys{N: r.Uint64(), W: r.Uint64(), A: kernBase + 0xC50D00 + uint64(r.Intn(0x1000))}
}

func TestEncodeDecodeWithKeysRoundTrip(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 50; i++ {
		b := syntheticBlock(KnownSizes[i%len(KnownSizes)], 0xFFFFF80000000000|uint64(r.Intn(1<<20))<<21, r)
		k := randomKeys(r, b.KernBase())
		enc := Encode(b, k)
		require.NotEqual(t, []byte(b), enc)
		require.Equal(t, []byte(b), DecodeWithKeys(enc, k))
	}
}

func TestKnownPlaintextRecoversSyntheticBlocks(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for i := 0; i < 200; i++ {
		size := KnownSizes[i%len(KnownSizes)]
		base := 0xFFFFF80000000000 | uint64(r.Intn(1<<20))<<21
		b := syntheticBlock(size, base, r)
		k := randomKeys(r, base)
		enc := Encode(b, k)
		cand, err := Recognize(enc, base)
		require.NoError(t, err, "iteration %d", i)
		require.True(t, cand.Encoded)
		require.Equal(t, size, cand.Size)
		require.Equal(t, k.Collapse(), cand.Key)
		got, err := Decode(enc, cand)
		require.NoError(t, err)
		require.Equal(t, b, got)
		require.NoError(t, Validate(got, base))

		// Wrong kernel base: nothing recognised.
		_, err = Recognize(enc, base+0x200000)
		require.ErrorIs(t, err, ErrNotKDBG)
	}
}

func TestPlainBlockIsRecognisedAsPlain(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	b := syntheticBlock(0x340, 0xFFFFF80000600000, r)
	cand, err := Recognize(b, 0xFFFFF80000600000)
	require.NoError(t, err)
	require.False(t, cand.Encoded)
	got, err := Decode(b, cand)
	require.NoError(t, err)
	require.Equal(t, b, got)
}

// TestRealTriageKDBGReencodedIsRecovered is the acceptance check of §5.3: the real decoded 19041 KDBG, encoded
// with random keys, is recovered byte for byte without knowing them.
func TestRealTriageKDBGReencodedIsRecovered(t *testing.T) {
	plain := triageKDBG(t)
	require.EqualValues(t, Tag, plain.Tag())
	require.EqualValues(t, 0x380, plain.Size())
	base := plain.KernBase()
	require.EqualValues(t, uint64(0xFFFFF8047BA00000), base)
	require.NoError(t, Validate(plain, base))
	r := rand.New(rand.NewSource(4))
	for i := 0; i < 100; i++ {
		k := randomKeys(r, base)
		enc := Encode(plain, k)
		cand, err := Recognize(enc, base)
		require.NoError(t, err)
		require.True(t, cand.Encoded)
		got, err := Decode(enc, cand)
		require.NoError(t, err)
		require.Equal(t, plain, got)
	}
}

func TestRealTriageKDBGFields(t *testing.T) {
	b := triageKDBG(t)
	// Values quoted in windows-internals §4.4 [dump].
	require.EqualValues(t, uint64(0xFFFFF8047C62A390), b.PsLoadedModuleList())
	require.EqualValues(t, uint64(0xFFFFF8047C61E200), b.PsActiveProcessHead())
	require.EqualValues(t, uint64(0xFFFFF8047C6FDC80), b.KiProcessorBlock())
	require.EqualValues(t, uint64(0xFFFFFD8000000000), b.PteBase())
	require.EqualValues(t, 0xB8, b.Must16(OffOffsetKThreadApcProcess))
	require.EqualValues(t, 0x550, b.Must16(OffOffsetEprocessPeb))
	require.EqualValues(t, 0xA40, b.Must16(OffSizeEProcess))
	require.EqualValues(t, 0x85C0, b.Must16(OffOffsetPrcbContext))
}

// kdCopyDataBlockCode is a KdCopyDataBlock look-alike assembled by the project (binutils, Intel syntax):
// sub rsp,28h; cmp byte [rip+100000h],0; mov rdx,rcx; je plain; lea r9,[rip+200000h]; mov r10d,70h;
// mov r8,[rip+300000h]; mov r11,[rip+300008h]; loop: mov rax,[r9]; xor rax,r8; mov ecx,r8d; rol rax,cl;
// xor rax,r9; bswap rax; xor rax,r11; mov [rdx],rax; add r9,8; add rdx,8; dec r10d; jnz loop; add rsp,28h; ret;
// plain: add rsp,28h; ret.
var kdCopyDataBlockCode = []byte{
	0x48, 0x83, 0xec, 0x28, 0x80, 0x3d, 0x00, 0x00, 0x10, 0x00, 0x00, 0x48,
	0x89, 0xca, 0x74, 0x45, 0x4c, 0x8d, 0x0d, 0x00, 0x00, 0x20, 0x00, 0x41,
	0xba, 0x70, 0x00, 0x00, 0x00, 0x4c, 0x8b, 0x05, 0x00, 0x00, 0x30, 0x00,
	0x4c, 0x8b, 0x1d, 0x08, 0x00, 0x30, 0x00, 0x49, 0x8b, 0x01, 0x4c, 0x31,
	0xc0, 0x44, 0x89, 0xc1, 0x48, 0xd3, 0xc0, 0x4c, 0x31, 0xc8, 0x48, 0x0f,
	0xc8, 0x4c, 0x31, 0xd8, 0x48, 0x89, 0x02, 0x49, 0x83, 0xc1, 0x08, 0x48,
	0x83, 0xc2, 0x08, 0x41, 0xff, 0xca, 0x75, 0xdb, 0x48, 0x83, 0xc4, 0x28,
	0xc3, 0x48, 0x83, 0xc4, 0x28, 0xc3,
}

func TestFindCopyDataBlockPattern(t *testing.T) {
	const va = 0xFFFFF80400510000
	code := make([]byte, 0x1000)
	copy(code[0x898:], kdCopyDataBlockCode)
	// A decoy: cmp byte [rip+x],0 followed by a ret and no bswap.
	copy(code[0x100:], []byte{0x80, 0x3d, 1, 2, 3, 4, 0, 0xc3})
	fn := uint64(va + 0x898)
	got := FindCopyDataBlock(code, va, 0)
	require.Len(t, got, 1)
	m := got[0]
	require.Equal(t, fn+4, m.Function)
	require.Equal(t, fn+0xB+0x100000, m.KdpDataBlockEncoded)
	require.Equal(t, fn+0x17+0x200000, m.KdDebuggerDataBlock)
	require.Equal(t, fn+0x24+0x300000, m.KiWaitNever)
	require.Equal(t, fn+0x2B+0x300008, m.KiWaitAlways)
	require.EqualValues(t, 0x70, m.QwordCount)
	require.Len(t, FindCopyDataBlock(code, va, m.KdDebuggerDataBlock), 1)
	require.Empty(t, FindCopyDataBlock(code, va, m.KdDebuggerDataBlock+8))
}
