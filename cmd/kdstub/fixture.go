package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// fixtureCommand is a placeholder until its issue lands; it says so instead of pretending.
func fixtureCommand() *cli.Command {
	return &cli.Command{
		Name:  "fixture",
		Usage: "(not implemented yet)",
		Action: func(*cli.Context) error {
			return errors.New("fixture: not implemented yet")
		},
	}
}
