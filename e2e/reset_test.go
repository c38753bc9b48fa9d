package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/kdproto"
	"github.com/kdstub/kdstub/windows/target"
)

// TestGuestResetRediscovers resets the guest under an attached debugger: the session goes on, and once the
// guest is back in its loop the kernel is discovered again (a new discovery result, the same facts because
// the fixture is deterministic).
func TestGuestResetRediscovers(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	s := startStub(t, 1)
	d := s.attachSerial(t, ctx, "unix")
	d.breakIn(t, ctx)
	before := s.target.Kernel()
	require.NotNil(t, before)
	d.cont(t, ctx, false, 0x400)
	require.NoError(t, s.m.Reset(ctx))
	for {
		time.Sleep(100 * time.Millisecond)
		d.breakIn(t, ctx)
		v := d.request(t, ctx, kdproto.APIGetVersion, nil, nil, 0)
		if k := s.target.Kernel(); k != before && v.ReturnStatus == kdproto.StatusSuccess {
			require.Equal(t, uint64(s.g.Manifest.KernelBase), v.U.(*kdproto.GetVersion64).KernBase)
			require.Equal(t, []byte(s.g.Manifest.KDBG.Plaintext[:0x18]), d.read(t, ctx, uint64(s.g.Manifest.KDBG.Address), 0x18))
			break
		}
		d.cont(t, ctx, false, 0x400)
		if ctx.Err() != nil {
			t.Fatal("the kernel was never rediscovered after the reset")
		}
	}
	d.cont(t, ctx, false, 0x400)
}

// TestQEMUKilledEndsServe kills QEMU under a running session: Serve must return an error promptly (no hang).
func TestQEMUKilledEndsServe(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	s := startStub(t, 1)
	d := s.attachSerial(t, ctx, "unix")
	d.breakIn(t, ctx)
	d.cont(t, ctx, false, 0x400)
	require.NoError(t, s.q.Kill())
	select {
	case err := <-d.srv:
		require.Error(t, err)
		require.ErrorIs(t, err, target.ErrGone)
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not notice that QEMU is gone")
	}
}
