package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// kdnetCommand is a placeholder until its issue lands; it says so instead of pretending.
func kdnetCommand() *cli.Command {
	return &cli.Command{
		Name:  "kdnet",
		Usage: "(not implemented yet)",
		Action: func(*cli.Context) error {
			return errors.New("kdnet: not implemented yet")
		},
	}
}
