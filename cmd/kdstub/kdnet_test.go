package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/internal/shareddata"
	"github.com/kdstub/kdstub/kdproto/kdnet"
)

const kdnetCapture = "testdata/kdnet/windbg-win10-10586-bootdbg-key-8.8.8.8.pcapng.gz"

// runApp runs the CLI in-process and returns what it printed on stdout.
func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	err := app.RunContext(context.Background(), append([]string{"kdstub", "--log-level", "error"}, args...))
	return out.String(), err
}

func checkDecodeOutput(t *testing.T, out string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		var l kdnet.Line
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "line %d", n)
		require.Equal(t, n, l.N)
		require.True(t, l.Verified, "line %d: %s", n, l.Error)
		require.NotEmpty(t, l.KD, "line %d", n)
	}
	require.NoError(t, sc.Err())
	require.Equal(t, 955, n)
}

func TestKdnetDecodeCommand(t *testing.T) {
	path := shareddata.Require(t, kdnetCapture)
	out, err := runApp(t, "kdnet", "decode", "--key", "8.8.8.8", path)
	require.NoError(t, err)
	checkDecodeOutput(t, out)
}

func TestKdnetDecodeCommandErrors(t *testing.T) {
	_, err := runApp(t, "kdnet", "decode", "--key", "8.8.8", "x")
	require.ErrorContains(t, err, "want 4 dot-separated words")
	_, err = runApp(t, "kdnet", "decode", "--key", "8.8.8.8")
	require.ErrorContains(t, err, "exactly one capture FILE")
	_, err = runApp(t, "kdnet", "decode", "--key", "8.8.8.8", filepath.Join(t.TempDir(), "missing.pcapng"))
	require.ErrorContains(t, err, "missing.pcapng")
}

func TestKdnetGenkeyCommand(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		out, err := runApp(t, "kdnet", "genkey")
		require.NoError(t, err)
		key := strings.TrimSpace(out)
		k, err := kdnet.ParseKey(key)
		require.NoError(t, err)
		require.Equal(t, key, k.String())
		seen[key] = true
	}
	require.Len(t, seen, 3)
}

// TestKdnetDecodeBinary builds the real binary once and decodes the capture with it.
func TestKdnetDecodeBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the kdstub binary; skipped with -short")
	}
	path := shareddata.Require(t, kdnetCapture)
	bin := filepath.Join(t.TempDir(), "kdstub")
	build := exec.Command("go", "build", "-o", bin, ".")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	cmd := exec.Command(bin, "kdnet", "decode", "--key", "8.8.8.8", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	checkDecodeOutput(t, string(out))
	require.Contains(t, stderr.String(), "verified=955")
}
