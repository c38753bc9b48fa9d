package serial

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
)

// Listener accepts KD serial connections: TCP for WinDbg's `-k com:ipport=PORT,port=IP`, or a unix stream
// socket for clients that speak to QEMU-style chardev sockets.
type Listener struct {
	ln net.Listener
}

// Listen listens on network "tcp" (address host:port) or "unix" (a socket path).
func Listen(ctx context.Context, network, address string) (*Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, fmt.Errorf("kd serial listen: network %q is not tcp or unix", network)
	}
	if network == "unix" {
		removeStaleSocket(ctx, address)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("kd serial listen on %s %s: %w", network, address, err)
	}
	return &Listener{ln: ln}, nil
}

// Addr is the listening address (useful with port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Accept waits for one debugger connection and returns a Transport over it.
func (l *Listener) Accept(ctx context.Context) (*Transport, error) {
	stop := context.AfterFunc(ctx, func() { _ = l.ln.Close() })
	defer stop()
	c, err := l.ln.Accept()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("kd serial accept on %s: %w", l.ln.Addr(), ctx.Err())
		}
		return nil, fmt.Errorf("kd serial accept on %s: %w", l.ln.Addr(), err)
	}
	return New(c), nil
}

// Close stops listening.
func (l *Listener) Close() error { return l.ln.Close() }

// Dial connects to a KD serial endpoint (the host role: the built-in client and tests).
func Dial(ctx context.Context, network, address string) (*Transport, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("kd serial dial %s %s: %w", network, address, err)
	}
	return New(c), nil
}

// removeStaleSocket deletes a unix socket file left behind by a process that died without closing it, so a
// restarted stub can listen again. A socket someone still listens on, or any other kind of file, is kept.
func removeStaleSocket(ctx context.Context, path string) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&fs.ModeSocket == 0 {
		return
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		_ = c.Close()
		return
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		_ = os.Remove(path)
	}
}
