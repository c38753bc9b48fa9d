package discover

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/windows/machine"
	"github.com/kdstub/kdstub/windows/paging"
)

// overlay is a PhysicalMemory that serves patched pages over a base memory (the fixture image stays read-only).
type overlay struct {
	base  machine.PhysicalMemory
	pages map[uint64][]byte
}

func (o *overlay) page(ctx context.Context, pa uint64) []byte {
	if p, ok := o.pages[pa]; ok {
		return p
	}
	p := make([]byte, 0x1000)
	_ = o.base.ReadPhysical(ctx, pa, p)
	o.pages[pa] = p
	return p
}

func (o *overlay) ReadPhysical(ctx context.Context, pa uint64, buf []byte) error {
	for done := 0; done < len(buf); {
		cur := pa + uint64(done)
		if p, ok := o.pages[cur&^0xFFF]; ok {
			done += copy(buf[done:], p[cur&0xFFF:])
			continue
		}
		n := min(len(buf)-done, int(0x1000-cur&0xFFF))
		if err := o.base.ReadPhysical(ctx, cur, buf[done:done+n]); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// TestFixtureDiscoveryUnderKVAShadow stops every CPU in user mode under a KVA-shadow user CR3: a PML4 that maps
// only the KPCR's top-level slot (not the kernel image). Discovery must take the kernel DTB from
// KPRCB.KernelDirectoryTableBase (gs:0x9000 on 19041), as windows-internals §0 step 2 describes.
func TestFixtureDiscoveryUnderKVAShadow(t *testing.T) {
	g, img := buildGuest(t, winguest.Options{Build: 19041, Seed: 41, CPUs: 2})
	ctx := context.Background()
	mem := &overlay{base: img, pages: map[uint64][]byte{}}
	kernel := paging.New(img, uint64(g.Manifest.KernelCR3), paging.ModeX64)

	// The shadow PML4 lives just past the end of RAM (the overlay serves it).
	shadow := g.RAMSize
	full := mem.page(ctx, uint64(g.Manifest.KernelCR3))
	sp := mem.page(ctx, shadow)
	for _, c := range g.Manifest.CPUs {
		slot := (uint64(c.KPCR) >> 39) & 0x1FF
		copy(sp[slot*8:slot*8+8], full[slot*8:slot*8+8])
		// KPRCB.KernelDirectoryTableBase = the full kernel DTB.
		pa, err := kernel.Translate(ctx, uint64(c.KPCR)+0x9000)
		require.NoError(t, err)
		binary.LittleEndian.PutUint64(mem.page(ctx, pa&^0xFFF)[pa&0xFFF:], uint64(g.Manifest.KernelCR3))
	}
	shadowSpace := paging.New(mem, shadow, paging.ModeX64)
	var mz [2]byte
	require.Error(t, shadowSpace.ReadVirtual(ctx, uint64(g.Manifest.KernelBase), mz[:]), "the shadow CR3 must not map the kernel image")

	cpus := append([]amd64Registers(nil), g.CPUs...)
	for i := range cpus {
		cpus[i].CS = 0x33
		cpus[i].GSBase, cpus[i].KernelGSBase = cpus[i].KernelGSBase, cpus[i].GSBase
		cpus[i].CR3 = shadow | 0x801 // a user PCID
	}
	k, err := FromCPUs(ctx, testLogger(t), mem, machine.StaticCPUs(cpus))
	require.NoError(t, err)
	require.Contains(t, k.Methods["DTB"], "KernelDirectoryTableBase (gs:0x9000)")
	require.Equal(t, uint64(g.Manifest.KernelCR3), k.DTB)
	require.Equal(t, uint64(g.Manifest.KernelBase), k.Base)
	require.Equal(t, uint64(g.Manifest.KDBG.Address), k.KDBG)
}
