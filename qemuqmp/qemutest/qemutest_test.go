package qemutest_test

import (
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/qemuqmp/qemutest"
)

func TestTinyGuestSymbols(t *testing.T) {
	g := qemutest.TinyGuest(t)
	for _, s := range []string{"_start", "tick", "ap_tick", "counter", "watched", "kpcr", "idt", "gdt", "pml4", "syscall_entry"} {
		require.Contains(t, g.Symbols, s)
	}
	require.EqualValues(t, 0x100000, g.Phys(t, "_start")&^0xFFF, "linked at 1 MiB")
	require.NotEqual(t, g.Phys(t, "tick")>>12, g.Phys(t, "counter")>>12, "data on a different page from code")
	require.NotEqual(t, g.Phys(t, "counter")>>6, g.Phys(t, "watched")>>6)
	require.Equal(t, qemutest.KernelBase+g.Phys(t, "kpcr"), g.KVA(t, "kpcr"))
	for _, f := range []string{g.ELF32, g.ELF64} {
		_, err := os.Stat(f)
		require.NoError(t, err)
	}
}

func TestCleanupKillsQEMUAndRemovesFiles(t *testing.T) {
	var pid int
	var shm string
	t.Run("run", func(t *testing.T) {
		q := qemutest.Start(t, qemutest.Options{SharedRAM: true, SMP: 2})
		pid, shm = q.Pid(), q.SharedRAM
		_, err := os.Stat(shm)
		require.NoError(t, err, "QEMU created the RAM file")
		require.NoError(t, syscall.Kill(pid, 0))
	})
	_, err := os.Stat(shm)
	require.ErrorIs(t, err, os.ErrNotExist, "RAM file removed")
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "QEMU killed and reaped")
}
