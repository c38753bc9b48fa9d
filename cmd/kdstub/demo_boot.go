package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/windows/machine"
	"github.com/kdstub/kdstub/windows/paging"
)

// demoRAMFile picks a fresh path for the guest's shared-memory RAM file (QEMU creates it; `fixture run` removes
// it), in /dev/shm when there is one, else in dir. Reading guest RAM from it lets the demo see when the guest has
// booted without touching QEMU's monitor.
func demoRAMFile(dir string) (string, error) {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dir = "/dev/shm"
	}
	f, err := os.CreateTemp(dir, "kdstub-demo-*.ram")
	if err != nil {
		return "", fmt.Errorf("pick a RAM file name: %w", err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return "", fmt.Errorf("pick a RAM file name: %w", err)
	}
	return name, nil
}

// waitGuestBooted polls the guest's RAM until its main loop has run (the manifest's loop counter is non-zero).
// Breaking in while the fixture's boot code still runs in 32-bit mode would find no kernel yet.
func waitGuestBooted(ctx context.Context, ramFile string, m *winguest.Manifest) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		if n, err := readCounter(ctx, ramFile, m); err == nil && n > 0 {
			return nil
		} else if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the guest to boot (last error: %v): %w", last, ctx.Err())
		case <-t.C:
		}
	}
}

func readCounter(ctx context.Context, ramFile string, m *winguest.Manifest) (uint64, error) {
	img, err := machine.OpenRawImage(ramFile)
	if err != nil {
		return 0, err
	}
	defer img.Close()
	var b [8]byte
	if err := paging.New(img, uint64(m.KernelCR3), paging.ModeX64).ReadVirtual(ctx, uint64(m.Loop.Counter), b[:]); err != nil {
		return 0, fmt.Errorf("read the loop counter: %w", err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}
