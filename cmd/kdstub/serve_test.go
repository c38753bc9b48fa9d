package main

import (
	"context"
	"flag"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"
)

// parseServeArgs runs the serve command's flag parsing on args and returns the transports.
func parseServeArgs(t *testing.T, args ...string) ([]*serveSpec, error) {
	t.Helper()
	cmd := serveCommand()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	for _, f := range cmd.Flags {
		require.NoError(t, f.Apply(fs))
	}
	require.NoError(t, fs.Parse(args))
	c := cli.NewContext(cli.NewApp(), fs, nil)
	c.Context = context.Background()
	return parseServeTransports(c)
}

func TestParseServeTransports(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		want    []string // describe() of each transport
		wantErr string
	}{
		{"serial tcp loopback default", []string{"--serial", "tcp-listen::5555"}, []string{"kd-serial tcp:127.0.0.1:5555"}, ""},
		{"serial unix", []string{"--serial", "unix-listen:/tmp/kd.sock"}, []string{"kd-serial unix:/tmp/kd.sock"}, ""},
		{"kdnet listen loopback default", []string{"--kdnet-listen", ":50000", "--key", "1.2.3.4"}, []string{"kdnet target= mode on 127.0.0.1:50000"}, ""},
		{"kdnet classic loopback", []string{"--kdnet", "127.0.0.1:50000", "--key", "1.2.3.4"}, []string{"kdnet classic to 127.0.0.1:50000 from 127.0.0.1:0"}, ""},
		{"kdnet classic remote", []string{"--kdnet", "192.168.1.5:50000", "--key", "1.2.3.4"}, []string{"kdnet classic to 192.168.1.5:50000 from 0.0.0.0:50000"}, ""},
		{"serial and kdnet together", []string{"--serial", "unix-listen:/tmp/kd.sock", "--kdnet-listen", ":50000"},
			[]string{"kd-serial unix:/tmp/kd.sock", "kdnet target= mode on 127.0.0.1:50000"}, ""},
		{"none", nil, nil, "at least one transport"},
		{"both kdnet modes", []string{"--kdnet", "127.0.0.1:1", "--kdnet-listen", ":2"}, nil, "at most one of --kdnet and --kdnet-listen"},
		{"bad serial", []string{"--serial", "tcp:1.2.3.4:5"}, nil, "want tcp-listen"},
		{"bad key", []string{"--kdnet-listen", ":1", "--key", "!!"}, nil, "--key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			specs, err := parseServeArgs(t, tc.args...)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, s := range specs {
				got = append(got, s.describe())
			}
			require.Equal(t, tc.want, got)
		})
	}
}

// TestDebuggerGate: one holder at a time; a waiter gets the gate when it is released.
func TestDebuggerGate(t *testing.T) {
	g := newDebuggerGate()
	_, ok := g.tryAcquire("serial")
	require.True(t, ok)
	holder, ok := g.tryAcquire("kdnet")
	require.False(t, ok)
	require.Equal(t, "serial", holder)
	got := make(chan error, 1)
	go func() { got <- g.acquire(context.Background(), "kdnet") }()
	select {
	case <-got:
		t.Fatal("acquired while held")
	default:
	}
	g.release()
	require.NoError(t, <-got)
	holder, ok = g.tryAcquire("serial")
	require.False(t, ok)
	require.Equal(t, "kdnet", holder)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, g.acquire(ctx, "x"), context.Canceled)
}
