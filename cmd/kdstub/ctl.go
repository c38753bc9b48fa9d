package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// ctlCommand is a placeholder until its issue lands; it says so instead of pretending.
func ctlCommand() *cli.Command {
	return &cli.Command{
		Name:  "ctl",
		Usage: "(not implemented yet)",
		Action: func(*cli.Context) error {
			return errors.New("ctl: not implemented yet")
		},
	}
}
