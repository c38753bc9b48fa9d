package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// kdCommand is a placeholder until its issue lands; it says so instead of pretending.
func kdCommand() *cli.Command {
	return &cli.Command{
		Name:  "kd",
		Usage: "(not implemented yet)",
		Action: func(*cli.Context) error {
			return errors.New("kd: not implemented yet")
		},
	}
}
