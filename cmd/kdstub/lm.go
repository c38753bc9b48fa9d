package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// lmCommand is a placeholder until its issue lands; it says so instead of pretending.
func lmCommand() *cli.Command {
	return &cli.Command{
		Name:  "lm",
		Usage: "(not implemented yet)",
		Action: func(*cli.Context) error {
			return errors.New("lm: not implemented yet")
		},
	}
}
