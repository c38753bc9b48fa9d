// Package dial connects to QEMU's sockets, riding out the moment between QEMU creating a socket file and
// listening on it.
package dial

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"time"
)

// settle bounds how long a refused or missing socket is retried when ctx has no earlier deadline. QEMU binds
// and listens within milliseconds of creating the file.
const settle = 3 * time.Second

// Split turns "unix:/p", "tcp:h:p", "h:p" or a path ("/p", "./p") into a network and address for net.Dial.
func Split(addr string) (string, string) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		return "unix", strings.TrimPrefix(addr, "unix:")
	case strings.HasPrefix(addr, "tcp:"):
		return "tcp", strings.TrimPrefix(addr, "tcp:")
	case strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "."):
		return "unix", addr
	}
	return "tcp", addr
}

// Dial connects to addr, retrying "connection refused" and "no such file" for a short while.
func Dial(ctx context.Context, addr string) (net.Conn, error) {
	network, address := Split(addr)
	ctx, cancel := context.WithTimeout(ctx, settle)
	defer cancel()
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, network, address)
		if err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetNoDelay(true)
			}
			return conn, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(5 * time.Millisecond):
		}
	}
}
