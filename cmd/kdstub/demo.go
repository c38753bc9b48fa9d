package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/fixtures/winguest"
	"github.com/kdstub/kdstub/kdproto/kdnet"
)

// demoCommand is the README's first command: the whole chain on loopback, with the bundled fixture guest.
func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "boot the fixture guest under QEMU, serve it over KDNET and run a scripted `kdstub kd` session",
		Description: "Generates the synthetic Windows guest into a temporary directory, runs it with `fixture run`, " +
			"serves it with `serve --kdnet-listen` on a loopback port with a generated key, and drives it with the " +
			"built-in debugger: version, lm, !process 0 0, a breakpoint on the guest's NtWriteFile-like export, " +
			"g, r, k, u, t, p, then detach. Everything is torn down at the end.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "cpus", Value: 2, Usage: "guest vCPUs"},
			&cli.BoolFlag{Name: "json", Usage: "kd output as JSON lines"},
			&cli.DurationFlag{Name: "timeout", Value: 90 * time.Second, Usage: "give up after this long"},
		},
		Action: demoAction,
	}
}

func demoAction(c *cli.Context) error {
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	return runDemo(ctx, logger(c), c.App.Writer, c.Int("cpus"), c.Bool("json"))
}

// subcommand runs one kdstub subcommand in-process (the same code path as on the command line) until ctx ends.
type subcommand struct {
	out  lockedWriter
	done chan error
}

// lockedWriter is an io.Writer safe for the subcommand's goroutines and the demo reading it.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startSubcommand(ctx context.Context, args ...string) *subcommand {
	s := &subcommand{done: make(chan error, 1)}
	app := newApp()
	app.Writer = &s.out
	go func() {
		s.done <- app.RunContext(ctx, append([]string{"kdstub", "--log-level", "warn"}, args...))
	}()
	return s
}

// waitFor polls the subcommand's output for want, failing if it exits first.
func (s *subcommand) waitFor(ctx context.Context, what, want string) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !strings.Contains(s.out.String(), want) {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("%s exited before it was ready: %v\n%s", what, err, s.out.String())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", what, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// stop cancels the subcommand and waits for it.
func (s *subcommand) stop(cancel context.CancelFunc) error {
	cancel()
	select {
	case err := <-s.done:
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case <-time.After(15 * time.Second):
		return errors.New("did not stop within 15 s")
	}
}

// demoAttachTries bounds the attach retries while the guest boots.
const demoAttachTries = 10

// demoScript is what the demo's debugger runs; %s is the breakpoint target.
const demoScript = "version; lm; !process 0 0; bp nt!%s; bl; g; r; k; u @rip L7; t; p; bc *"

func runDemo(ctx context.Context, lg *slog.Logger, out io.Writer, cpus int, asJSON bool) (err error) {
	tmp, err := os.MkdirTemp("", "kdstub-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "guest")

	fmt.Fprintf(out, "== generating the fixture guest in %s\n", dir)
	var buildOut lockedWriter
	app := newApp()
	app.Writer = &buildOut
	if err := app.RunContext(ctx, []string{"kdstub", "--log-level", "warn", "fixture", "build", "--out", dir,
		"--cpus", fmt.Sprint(cpus), "--no-disk"}); err != nil {
		return fmt.Errorf("demo: fixture build: %w", err)
	}
	m, err := winguest.Load(dir)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	ramFile, err := demoRAMFile(tmp)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(out, "== starting QEMU (fixture run, guest RAM in %s)\n", ramFile)
	runCtx, runCancel := context.WithCancel(ctx)
	defer runCancel()
	run := startSubcommand(runCtx, "fixture", "run", "--dir", dir, "--ram-file", ramFile)
	defer func() {
		if serr := run.stop(runCancel); serr != nil && err == nil {
			err = fmt.Errorf("demo: stop QEMU: %w", serr)
		}
	}()
	if err := run.waitFor(ctx, "fixture run", "pid="); err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	bootCtx, bootCancel := context.WithTimeout(ctx, 60*time.Second)
	err = waitGuestBooted(bootCtx, ramFile, m)
	bootCancel()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	port, err := freeUDPPort()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	key, err := kdnet.Generate(rand.Reader)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	fmt.Fprintf(out, "== kdstub serve: KDNET target= mode on %s, key %s\n", addr, key)
	serveCtx, serveCancel := context.WithCancel(ctx)
	defer serveCancel()
	srv := startSubcommand(serveCtx, "serve", "--qmp", "unix:"+filepath.Join(dir, "qmp.sock"),
		"--gdb", "unix:"+filepath.Join(dir, "gdb.sock"), "--ram-file", ramFile, "--kdnet-listen", addr, "--key", key.String())
	defer func() {
		if serr := srv.stop(serveCancel); serr != nil && err == nil {
			err = fmt.Errorf("demo: stop serve: %w", serr)
		}
	}()
	if err := srv.waitFor(ctx, "serve", "listening on"); err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	script := fmt.Sprintf(demoScript, m.Loop.Function)
	fmt.Fprintf(out, "== kdstub kd --kdnet-target %s --key %s -c %q\n", addr, key, script)
	// The guest has booted; should the first attach still fail (a slow machine), it is retried as a user would.
	for attempt := 1; ; attempt++ {
		err := runKD(ctx, lg, out, kdOptions{KDNETTarget: addr, Key: key.String(), Commands: script, JSON: asJSON,
			AttachTimeout: 30 * time.Second})
		var ae *attachError
		if err == nil {
			break
		}
		if !errors.As(err, &ae) || attempt >= demoAttachTries || ctx.Err() != nil {
			return fmt.Errorf("demo: %w", err)
		}
		fmt.Fprintf(out, "== attach attempt %d failed (%v); the guest may still be booting, retrying\n", attempt, err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return fmt.Errorf("demo: %w", ctx.Err())
		}
	}
	fmt.Fprintln(out, "== detached; tearing down")
	return nil
}

// freeUDPPort asks the kernel for an unused loopback UDP port.
func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a UDP port: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}
