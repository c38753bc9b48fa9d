// Package shareddata locates the project's shared reference data (../shared next to the repository).
//
// The data is never copied into the repository, so tests find it at run time. A test that needs it skips
// when it is missing on a developer's machine, but fails under CI (CI is set), where a silent skip would
// hide a broken checkout layout.
package shareddata

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// EnvOverride names an environment variable that points at the shared directory directly.
const EnvOverride = "KDSTUB_SHARED"

// Dir returns the shared directory: $KDSTUB_SHARED, or ../shared beside the repository root.
func Dir() (string, error) {
	if d := os.Getenv(EnvOverride); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(root), "shared"), nil
}

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working directory: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("no go.mod above " + wd)
		}
	}
}

// Path resolves rel (for example "testdata/dumps/win10-19041-x64-triage.dmp") inside the shared directory.
func Path(rel string) (string, error) {
	d, err := Dir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(d, filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("shared data %s: %w", p, err)
	}
	return p, nil
}

// InCI reports whether the CI environment variable is set to a non-empty value.
func InCI() bool { return os.Getenv("CI") != "" }

// Require returns the path of rel for a test. When the file is missing it skips the test with a message
// naming the path, or fails it under CI.
func Require(tb testing.TB, rel string) string {
	tb.Helper()
	p, err := Path(rel)
	if err != nil {
		if InCI() {
			tb.Fatalf("required shared test data missing under CI: %v", err)
		}
		tb.Skipf("skipping: shared test data not available: %v (set %s or place ../shared beside the repository)", err, EnvOverride)
	}
	return p
}
