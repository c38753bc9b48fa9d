package target

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// Kernel is what the target needs to know about the guest kernel; windows discovery produces it (and a fixture
// manifest can stand in for it in tests). Addresses are kernel VAs unless named otherwise.
type Kernel struct {
	Build              uint16 // NtBuildNumber & 0xFFFF (GetVersion MinorVersion)
	KernBase           uint64
	PsLoadedModuleList uint64 // address of nt!PsLoadedModuleList
	DebuggerDataList   uint64 // address of nt!KdpDebuggerDataListHead (its Flink is the KDBG)
	KernelCR3          uint64 // a CR3 that maps the whole kernel (System's DirectoryTableBase)

	KDBG      uint64 // address of KdDebuggerDataBlock
	KDBGPlain []byte // the decoded block (Size bytes); served for every read overlapping it
	// KdpDataBlockEncoded is the address of the flag byte (0 = unknown); it reads as 0, as on a debug boot.
	KdpDataBlockEncoded uint64

	// KPCR per CPU index, when known; otherwise it is taken from the CPU's GS base (or KernelGSBase in user mode).
	KPCR []uint64
}

// Discoverer finds the kernel; the target calls it at start and again after a guest reset.
type Discoverer interface {
	Discover(ctx context.Context) (*Kernel, error)
}

// DiscoverFunc adapts a function to Discoverer.
type DiscoverFunc func(ctx context.Context) (*Kernel, error)

// Discover implements Discoverer.
func (f DiscoverFunc) Discover(ctx context.Context) (*Kernel, error) { return f(ctx) }

// KDBG fields the target reads from the decoded block (windows-internals.md §4.2).
const (
	kdbgOffBreakpointWithStatus  = 0x020
	kdbgOffOffsetPrcbCurrentThd  = 0x2B4
	kdbgOffOffsetPcrCurrentPrcb  = 0x2E4
	kdbgOffOffsetPcrContainedPrc = 0x2E6
	kdbgOffSize                  = 0x014
)

// Fallbacks when the KDBG is too short to say (x64 Win10 values, windows-internals.md §4.4).
const (
	defaultPrcbCurrentThread = 0x08
	defaultPcrContainedPrcb  = 0x180
	kpcrSelfOffset           = 0x18
)

var errNoKernel = errors.New("kernel not discovered")

func (k *Kernel) validate() error {
	if k == nil {
		return errNoKernel
	}
	if k.KernBase == 0 {
		return fmt.Errorf("kernel facts: KernBase is 0")
	}
	if len(k.KDBGPlain) > 0 && len(k.KDBGPlain) < 0x18 {
		return fmt.Errorf("kernel facts: KDBG plaintext is %d bytes, shorter than its header", len(k.KDBGPlain))
	}
	return nil
}

func (k *Kernel) kdbgU16(off int) (uint16, bool) {
	if k == nil || off+2 > len(k.KDBGPlain) {
		return 0, false
	}
	return binary.LittleEndian.Uint16(k.KDBGPlain[off:]), true
}

func (k *Kernel) kdbgU64(off int) (uint64, bool) {
	if k == nil || off+8 > len(k.KDBGPlain) {
		return 0, false
	}
	return binary.LittleEndian.Uint64(k.KDBGPlain[off:]), true
}

// prcbCurrentThread is KPRCB.CurrentThread's offset.
func (k *Kernel) prcbCurrentThread() uint64 {
	if v, ok := k.kdbgU16(kdbgOffOffsetPrcbCurrentThd); ok && v != 0 {
		return uint64(v)
	}
	return defaultPrcbCurrentThread
}

// pcrContainedPrcb is the KPRCB's offset inside the KPCR.
func (k *Kernel) pcrContainedPrcb() uint64 {
	if v, ok := k.kdbgU16(kdbgOffOffsetPcrContainedPrc); ok && v != 0 {
		return uint64(v)
	}
	return defaultPcrContainedPrcb
}

// kspecialSize is the natural KSPECIAL_REGISTERS size for the build (kd-protocol.md §5.2).
func (k *Kernel) kspecialSize() int {
	switch {
	case k == nil:
		return 0xF0
	case k.Build >= 10240:
		return 0xF0
	case k.Build >= 9200:
		return 0xE0
	case k.Build == 0:
		return 0xF0
	}
	return 0xD8
}
