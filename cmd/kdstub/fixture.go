package main

import (
	"github.com/urfave/cli/v2"
)

// fixtureCommand groups the synthetic Windows guest tools: build one, run one under QEMU.
func fixtureCommand() *cli.Command {
	return &cli.Command{
		Name:  "fixture",
		Usage: "build or run the synthetic Windows x64 guest used by tests and the demo",
		Subcommands: []*cli.Command{
			fixtureBuildCommand(),
			fixtureRunCommand(),
		},
	}
}
