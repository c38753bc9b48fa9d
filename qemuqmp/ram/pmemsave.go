package ram

import (
	"context"
	"fmt"
	"io"
	"os"
)

// Saver is the QMP operation the pmemsave backend needs (qmp.Client implements it).
type Saver interface {
	Pmemsave(ctx context.Context, addr, size uint64, path string) error
}

// maxPmemsave bounds one pmemsave call so a huge read does not need a file of the same size at once.
const maxPmemsave = 256 << 20

// Pmemsave reads guest-physical memory by asking QEMU to write it to a file and reading that back.
// One QMP round trip per request makes it slow for small reads (~0.5 ms) but fast for bulk (hundreds of MB/s),
// and it works while the VM runs. Dir should be on tmpfs (/dev/shm) and writable by QEMU.
type Pmemsave struct {
	QMP Saver
	Dir string
}

// ReadPhysical implements Backend.
func (p *Pmemsave) ReadPhysical(ctx context.Context, pa uint64, buf []byte) error {
	for done := 0; done < len(buf); {
		n := min(len(buf)-done, maxPmemsave)
		if err := p.readChunk(ctx, pa+uint64(done), buf[done:done+n]); err != nil {
			return err
		}
		done += n
	}
	return nil
}

func (p *Pmemsave) readChunk(ctx context.Context, pa uint64, buf []byte) error {
	f, err := os.CreateTemp(p.Dir, "kdstub-pmemsave-*.bin")
	if err != nil {
		return fmt.Errorf("pmemsave scratch file in %s: %w", p.Dir, err)
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	if err := p.QMP.Pmemsave(ctx, pa, uint64(len(buf)), name); err != nil {
		return fmt.Errorf("pmemsave %d bytes at PA %#x: %w", len(buf), pa, err)
	}
	f, err = os.Open(name)
	if err != nil {
		return fmt.Errorf("open pmemsave output: %w", err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, buf); err != nil {
		return fmt.Errorf("read pmemsave output of %d bytes at PA %#x: %w", len(buf), pa, err)
	}
	return nil
}

// WritePhysical always fails: pmemsave has no write counterpart.
func (p *Pmemsave) WritePhysical(_ context.Context, pa uint64, _ []byte) error {
	return fmt.Errorf("write at PA %#x through pmemsave: %w", pa, ErrReadOnly)
}
