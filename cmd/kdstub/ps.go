package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// psCommand is a placeholder until its issue lands; it says so instead of pretending.
func psCommand() *cli.Command {
	return &cli.Command{
		Name:  "ps",
		Usage: "(not implemented yet)",
		Action: func(*cli.Context) error {
			return errors.New("ps: not implemented yet")
		},
	}
}
