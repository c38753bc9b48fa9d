package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// scanCommand is a placeholder until its issue lands; it says so instead of pretending.
func scanCommand() *cli.Command {
	return &cli.Command{
		Name:  "scan",
		Usage: "(not implemented yet)",
		Action: func(*cli.Context) error {
			return errors.New("scan: not implemented yet")
		},
	}
}
