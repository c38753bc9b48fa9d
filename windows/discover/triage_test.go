package discover

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/shareddata"
	"github.com/kdstub/kdstub/windows/dump"
	"github.com/kdstub/kdstub/windows/objects"
)

func TestFromTriageDump(t *testing.T) {
	d, err := dump.Open(shareddata.Require(t, "testdata/dumps/win10-19041-x64-triage.dmp"))
	require.NoError(t, err)
	defer d.Close()
	k, err := FromTriage(context.Background(), testLogger(t), d)
	require.NoError(t, err)
	h := d.Header()
	// Values from the dump header (this exact kernel), windows-internals §9.1 / §4.4.
	require.Equal(t, uint64(0xFFFFF8047BA00000), k.Base)
	require.EqualValues(t, 0x1046000, k.Size)
	require.EqualValues(t, 19041, k.Build)
	require.Equal(t, h.PsLoadedModuleList, k.PsLoadedModuleList)
	require.Equal(t, h.PsActiveProcessHead, k.PsActiveProcessHead)
	require.Equal(t, h.KdDebuggerDataBlock, k.KDBG)
	require.Equal(t, uint64(0xFFFFFD8000000000), k.PteBase)
	require.Empty(t, k.Warnings)
	require.NotNil(t, k.Offsets)
	require.Len(t, k.CPUs, 1)
	require.Equal(t, k.CPUs[0].KPRCB-0x180, k.CPUs[0].KPCR)

	tri, err := d.Triage()
	require.NoError(t, err)
	p, err := objects.ReadProcess(context.Background(), d, tri.Process.VA, k.Offsets)
	require.NoError(t, err)
	require.EqualValues(t, 4, p.PID)
	require.Equal(t, "System", p.Name)
	require.Equal(t, h.DTB, p.DTB)
}
