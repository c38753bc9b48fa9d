package qemutest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

//go:embed tinyguest/guest.S
var guestSource []byte

//go:embed tinyguest/linker.ld
var guestLinker []byte

// KernelBase is the high alias the tiny guest's 64-bit code runs at (PML4 slot 496, like a Windows kernel).
const KernelBase = 0xFFFFF80000000000

// Known constants the tiny guest writes to its MSRs.
const (
	GuestFSBase       = 0x7FF712340000
	GuestKernelGSBase = 0xDEADBEEF00
	GuestKPCRMarker   = "KPCRKPCR"
)

// Guest is a built tiny guest: the ELF32 that -kernel accepts and the ELF64 whose symbols tests compare with.
type Guest struct {
	ELF32, ELF64 string
	Symbols      map[string]uint64 // physical (link) addresses from nm
}

// Phys returns a symbol's physical address and fails the test when it is missing.
func (g *Guest) Phys(t testing.TB, name string) uint64 {
	t.Helper()
	v, ok := g.Symbols[name]
	if !ok {
		t.Fatalf("tiny guest has no symbol %q", name)
	}
	return v
}

// KVA returns a symbol's address at the kernel-like alias, where the guest's code runs.
func (g *Guest) KVA(t testing.TB, name string) uint64 { return KernelBase + g.Phys(t, name) }

var buildMu sync.Mutex

// TinyGuest builds the tiny guest with binutils (once per source hash, cached in the user cache directory) and
// returns it. Missing binutils skip the test, or fail it under CI.
func TinyGuest(t testing.TB) *Guest {
	t.Helper()
	for _, tool := range []string{"as", "ld", "objcopy", "nm"} {
		requireTool(t, tool)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	sum := sha256.Sum256(append(append([]byte{}, guestSource...), guestLinker...))
	key := hex.EncodeToString(sum[:8])
	dir := ""
	if cache, err := os.UserCacheDir(); err == nil {
		dir = filepath.Join(cache, "kdstub", "tinyguest", key)
	}
	if dir == "" || !complete(dir) {
		built, err := build(t.TempDir())
		if err != nil {
			t.Fatalf("build tiny guest: %v", err)
		}
		if dir == "" || publish(built, dir) != nil {
			dir = built
		}
	}
	g := &Guest{ELF32: filepath.Join(dir, "guest32.elf"), ELF64: filepath.Join(dir, "guest64.elf")}
	syms, err := symbols(g.ELF64)
	if err != nil {
		t.Fatalf("tiny guest symbols: %v", err)
	}
	g.Symbols = syms
	return g
}

func complete(dir string) bool {
	for _, f := range []string{"guest32.elf", "guest64.elf"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return false
		}
	}
	return true
}

// publish moves a finished build into the cache atomically, so parallel test binaries never see half a build.
func publish(built, dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return err
	}
	for _, f := range []string{"guest32.elf", "guest64.elf"} {
		b, err := os.ReadFile(filepath.Join(built, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(tmp, f), b, 0o644); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if complete(dir) {
			return nil // another process won the race
		}
		return err
	}
	return nil
}

func build(dir string) (string, error) {
	src := filepath.Join(dir, "guest.S")
	lds := filepath.Join(dir, "linker.ld")
	if err := os.WriteFile(src, guestSource, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(lds, guestLinker, 0o644); err != nil {
		return "", err
	}
	obj := filepath.Join(dir, "guest.o")
	e64 := filepath.Join(dir, "guest64.elf")
	e32 := filepath.Join(dir, "guest32.elf")
	steps := [][]string{
		{"as", "--64", "-o", obj, src},
		// max-page-size keeps the multiboot header inside the first 8 KiB of the file
		{"ld", "-m", "elf_x86_64", "-z", "max-page-size=0x1000", "-T", lds, "-o", e64, obj},
		// QEMU's multiboot loader refuses ELF64
		{"objcopy", "-I", "elf64-x86-64", "-O", "elf32-i386", e64, e32},
	}
	for _, s := range steps {
		out, err := exec.Command(s[0], s[1:]...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s: %v\n%s", strings.Join(s, " "), err, out)
		}
	}
	return dir, nil
}

func symbols(elf string) (map[string]uint64, error) {
	out, err := exec.Command("nm", elf).Output()
	if err != nil {
		return nil, fmt.Errorf("nm %s: %w", elf, err)
	}
	syms := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		v, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			continue
		}
		syms[f[2]] = v
	}
	return syms, nil
}

func requireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found (run make deps): %v", name, err)
		}
		t.Skipf("%s not found (run make deps)", name)
	}
}
