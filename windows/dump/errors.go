package dump

import (
	"errors"
	"fmt"
)

var (
	// ErrFormat is wrapped by every error about malformed dump contents (bad signature, out-of-range
	// offsets, impossible counts).
	ErrFormat = errors.New("malformed crash dump")
	// ErrNotPresent is matched (errors.Is) by every read that touches an address the dump does not hold.
	ErrNotPresent = errors.New("not present in dump")
	// ErrTriagePhysical is returned by ReadPhysical on a triage dump: triage dumps carry no physical pages,
	// only VA-tagged fragments, so callers must switch to ReadVirtual.
	ErrTriagePhysical = errors.New("physical reads are not supported for triage dumps")
	// ErrNoVirtual is returned by ReadVirtual on a dump that is not a triage dump: those hold physical
	// memory, and virtual reads belong to a page-table walker above this package.
	ErrNoVirtual = errors.New("virtual reads need a triage dump (translate through ReadPhysical instead)")
	// ErrUnsupported is returned for dump layouts this package does not decode (32-bit PAGEDUMP files,
	// header-only dumps, the Windows 11 "RDMP" raw layouts).
	ErrUnsupported = errors.New("unsupported crash dump layout")
)

// NotPresentError names the address a read could not satisfy. It matches ErrNotPresent with errors.Is.
type NotPresentError struct {
	Virtual bool   // true for ReadVirtual (a VA), false for ReadPhysical (a PA)
	Addr    uint64 // first byte that is missing
}

func (e *NotPresentError) Error() string {
	space := "PA"
	if e.Virtual {
		space = "VA"
	}
	return fmt.Sprintf("%s %#x: %v", space, e.Addr, ErrNotPresent)
}

// Is lets errors.Is(err, ErrNotPresent) succeed.
func (e *NotPresentError) Is(target error) bool { return target == ErrNotPresent }

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}
