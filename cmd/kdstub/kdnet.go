package main

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/kdstub/kdstub/kdproto/kdnet"
)

// kdnetCommand groups offline KDNET tools: decoding captures and making keys. They share the key rules with the
// live transports, so a capture that decodes here will also talk to kdstub.
func kdnetCommand() *cli.Command {
	return &cli.Command{
		Name:  "kdnet",
		Usage: "KDNET tools: decode captures, generate keys",
		Subcommands: []*cli.Command{
			{
				Name:      "decode",
				Usage:     "decrypt a pcap/pcapng capture (optionally .gz) and print one JSON line per UDP datagram",
				ArgsUsage: "FILE (- for standard input)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "key", Aliases: []string{"k"}, Required: true, Usage: "KDNET key w.x.y.z"},
				},
				Action: kdnetDecode,
			},
			{
				Name:  "genkey",
				Usage: "print a fresh random KDNET key (as bcdedit /dbgsettings would)",
				Action: func(c *cli.Context) error {
					k, err := kdnet.Generate(rand.Reader)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintln(c.App.Writer, k.String())
					return err
				},
			},
		},
	}
}

func kdnetDecode(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("kdnet decode: want exactly one capture FILE")
	}
	key, err := kdnet.ParseKey(c.String("key"))
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	var in io.Reader = os.Stdin
	if name := c.Args().First(); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("kdnet decode: %w", err)
		}
		defer f.Close()
		in = f
	}
	w := bufio.NewWriter(c.App.Writer)
	s, err := kdnet.DecodeCapture(c.Context, in, key, w)
	if ferr := w.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write output: %w", ferr)
	}
	if err != nil {
		return fmt.Errorf("kdnet decode %s: %w", c.Args().First(), err)
	}
	if s.Datagrams > 0 && s.Verified == 0 {
		logger(c).Warn("kdnet decode: no datagram verified; is the key right?", "key", key.String())
	}
	logger(c).Info("kdnet decode done", "file", c.Args().First(), "frames", s.Frames, "datagrams", s.Datagrams,
		"verified", s.Verified, "failed", s.Failed, "kd_errors", s.KDErrors)
	return nil
}
