// Command kdstub lets stock WinDbg attach to a Windows guest in QEMU that was never booted in debug mode.
//
// The command is deliberately thin: it parses flags, wires kdproto, windows and qemuqmp together and logs.
// No protocol or Windows logic lives here.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newApp().RunContext(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kdstub:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "kdstub",
		Usage: "a KD target for WinDbg, backed by QEMU, for guests not booted in debug mode",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.BoolFlag{Name: "log-json", Usage: "log as JSON lines on stderr"},
		},
		Before: func(c *cli.Context) error {
			lg, err := newLogger(c.String("log-level"), c.Bool("log-json"))
			if err != nil {
				return err
			}
			if c.App.Metadata == nil {
				c.App.Metadata = map[string]any{}
			}
			c.App.Metadata[loggerKey] = lg
			return nil
		},
		Commands: []*cli.Command{
			serveCommand(),
			kdCommand(),
			scanCommand(),
			psCommand(),
			lmCommand(),
			ctlCommand(),
			kdnetCommand(),
			fixtureCommand(),
			demoCommand(),
		},
	}
}

const loggerKey = "logger"

// newLogger builds the one logger of the process; it is handed down explicitly rather than installed as
// slog's default, so that libraries never depend on global state.
func newLogger(level string, asJSON bool) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if asJSON {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	return slog.New(h), nil
}

// logger returns the process logger set up in the app's Before hook.
func logger(c *cli.Context) *slog.Logger {
	if lg, ok := c.App.Metadata[loggerKey].(*slog.Logger); ok {
		return lg
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}
