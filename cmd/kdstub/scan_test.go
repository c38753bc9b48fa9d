package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/internal/shareddata"
)

func runKdstub(t *testing.T, args ...string) string {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	require.NoError(t, app.RunContext(context.Background(), append([]string{"kdstub", "--log-level", "error"}, args...)))
	return out.String()
}

func TestScanPsLmOnFixtureImage(t *testing.T) {
	g, err := winguest.Build(context.Background(), winguest.Options{Build: 19041, Seed: 7, CPUs: 2, Out: t.TempDir(), NoDisk: true})
	require.NoError(t, err)
	m := g.Manifest
	cpus := filepath.Join(g.Dir, winguest.CPUsFile)

	for _, withCPUs := range []bool{true, false} {
		args := []string{"--memory", g.RAMImage}
		if withCPUs {
			args = append(args, "--cpus", cpus)
		}
		out := runKdstub(t, append([]string{"scan"}, args...)...)
		require.Contains(t, out, fmt.Sprintf("%#x", uint64(m.KernelBase)))
		require.Contains(t, out, fmt.Sprintf("%#x", uint64(m.KDBG.Address)))

		var k struct {
			Base string `json:"base"`
			KDBG string `json:"kdbg"`
			CPUs []struct {
				KPCR string `json:"kpcr"`
			} `json:"cpus"`
		}
		require.NoError(t, json.Unmarshal([]byte(runKdstub(t, append([]string{"scan", "--json"}, args...)...)), &k))
		require.Equal(t, fmt.Sprintf("%#x", uint64(m.KernelBase)), k.Base, "addresses are hex strings in JSON")
		require.Equal(t, fmt.Sprintf("%#x", uint64(m.KDBG.Address)), k.KDBG)
		require.Len(t, k.CPUs, len(m.CPUs))
		for i, c := range m.CPUs {
			require.Equal(t, fmt.Sprintf("%#x", uint64(c.KPCR)), k.CPUs[i].KPCR)
		}

		ps := runKdstub(t, append([]string{"ps"}, args...)...)
		for _, p := range m.Processes {
			require.Contains(t, ps, p.Name)
		}
		var procs []struct {
			PID  uint64 `json:"pid"`
			Name string `json:"name"`
		}
		require.NoError(t, json.Unmarshal([]byte(runKdstub(t, append([]string{"ps", "--json"}, args...)...)), &procs))
		require.Len(t, procs, len(m.Processes))
		for i, p := range m.Processes {
			require.Equal(t, p.PID, procs[i].PID)
			require.Equal(t, p.Name, procs[i].Name)
		}

		lm := runKdstub(t, append([]string{"lm"}, args...)...)
		for _, km := range m.KernelModules {
			require.Contains(t, lm, km.Name)
		}
		require.Contains(t, lm, m.KernelModules[0].PDBName)

		var user *winguest.Process
		for i := range m.Processes {
			if len(m.Processes[i].Modules) > 0 {
				user = &m.Processes[i]
				break
			}
		}
		require.NotNil(t, user)
		lmu := runKdstub(t, append([]string{"lm", "--pid", fmt.Sprint(user.PID)}, args...)...)
		for _, um := range user.Modules {
			require.True(t, strings.Contains(lmu, um.Name), "lm --pid %d lacks %s:\n%s", user.PID, um.Name, lmu)
		}
	}
}

func TestScanPsLmOnTriageDump(t *testing.T) {
	path := shareddata.Require(t, "testdata/dumps/win10-19041-x64-triage.dmp")
	out := runKdstub(t, "scan", "--memory", path)
	require.Contains(t, out, "0xfffff8047ba00000")
	require.Contains(t, out, "0xfffff8047c600b20")
	ps := runKdstub(t, "ps", "--memory", path)
	require.Contains(t, ps, "System")
	var mods []struct {
		Name string `json:"name"`
		Base string `json:"base"`
	}
	require.NoError(t, json.Unmarshal([]byte(runKdstub(t, "lm", "--json", "--memory", path)), &mods))
	require.Len(t, mods, 151)
	require.Equal(t, "ntoskrnl.exe", mods[0].Name)
	require.Equal(t, "0xfffff8047ba00000", mods[0].Base)
	require.Equal(t, "hal.dll", mods[1].Name)
}
