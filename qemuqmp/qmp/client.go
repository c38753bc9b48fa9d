package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/kdstub/kdstub/qemuqmp/internal/backlog"
	"github.com/kdstub/kdstub/qemuqmp/internal/dial"
)

// ErrGone means the QMP connection is closed (QEMU exited, was killed, or Close was called).
var ErrGone = errors.New("qmp: connection gone")

// maxLine bounds one JSON line. Real replies reach a few hundred KiB (query-qmp-schema is ~207 KB, big HMP
// dumps more); the cap only stops a runaway stream.
const maxLine = 64 << 20

// maxQueuedEvents bounds the event backlog when nobody reads Events; the oldest are dropped beyond it.
const maxQueuedEvents = 4096

// Client is one QMP connection. A reader goroutine owns the receive side; commands carry ids so replies are
// matched even with events interleaved, and Execute may be called from many goroutines.
type Client struct {
	conn net.Conn
	log  *slog.Logger

	wmu    sync.Mutex
	mu     sync.Mutex
	nextID uint64
	wait   map[string]chan Message

	events *backlog.Queue[Event]

	closed chan struct{}
	cerr   error
	once   sync.Once

	Greeting json.RawMessage
}

// Dial connects to addr ("unix:/path", "tcp:host:port", "host:port" or a socket path), reads the greeting and
// negotiates capabilities.
func Dial(ctx context.Context, addr string, log *slog.Logger) (*Client, error) {
	conn, err := dial.Dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial qmp %s: %w", addr, err)
	}
	c, err := NewClient(ctx, conn, log)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", addr, err)
	}
	return c, nil
}

// NewClient runs the greeting and capabilities negotiation over conn and starts the reader.
func NewClient(ctx context.Context, conn net.Conn, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		conn:   conn,
		log:    log,
		wait:   map[string]chan Message{},
		closed: make(chan struct{}),
	}
	c.events = backlog.New(maxQueuedEvents, 64, c.closed, func(e Event) {
		c.log.Warn("qmp: event backlog full, dropping oldest", "dropped", e.Name)
	})
	br := bufio.NewReaderSize(conn, 64<<10)
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	line, err := readLine(br)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read greeting: %w", err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	m, err := DecodeMessage(line)
	if err != nil || m.Kind != KindGreeting {
		conn.Close()
		return nil, fmt.Errorf("greeting %q: %w", short(line), ErrBadMessage)
	}
	c.Greeting = m.QMP
	go c.readLoop(br)
	if _, err := c.Execute(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp_capabilities: %w", err)
	}
	return c, nil
}

func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
		if len(line) > maxLine {
			return nil, fmt.Errorf("line longer than %d bytes: %w", maxLine, ErrBadMessage)
		}
	}
}

func (c *Client) readLoop(br *bufio.Reader) {
	for {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			c.shutdown(fmt.Errorf("%w: %v", ErrGone, err))
			return
		}
		m, err := DecodeMessage(line)
		if err != nil {
			c.log.Warn("qmp: dropping undecodable line", "err", err)
			continue
		}
		switch m.Kind {
		case KindEvent:
			c.queueEvent(m.Event)
		case KindReturn, KindError:
			c.deliver(m)
		default:
			c.log.Warn("qmp: unexpected message", "kind", m.Kind)
		}
	}
}

func (c *Client) deliver(m Message) {
	c.mu.Lock()
	key := string(m.ID)
	ch, ok := c.wait[key]
	if !ok && m.ID == nil {
		// A reply without id answers a command QEMU could not parse; commands are answered in order, so it
		// belongs to the oldest outstanding one.
		var oldest uint64
		for k := range c.wait {
			if n, err := strconv.ParseUint(k, 10, 64); err == nil && (oldest == 0 || n < oldest) {
				oldest = n
			}
		}
		key = strconv.FormatUint(oldest, 10)
		ch, ok = c.wait[key]
	}
	if ok {
		delete(c.wait, key)
	}
	c.mu.Unlock()
	if !ok {
		c.log.Warn("qmp: reply for no outstanding command", "id", string(m.ID))
		return
	}
	ch <- m
}

func (c *Client) queueEvent(e Event) { c.events.Push(e) }

// Events delivers asynchronous events in arrival order. It is closed after the connection is gone.
func (c *Client) Events() <-chan Event { return c.events.Out() }

// Done is closed when the connection is gone.
func (c *Client) Done() <-chan struct{} { return c.closed }

// Err returns why the connection is gone, or nil while it is up.
func (c *Client) Err() error {
	select {
	case <-c.closed:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.cerr
	default:
		return nil
	}
}

func (c *Client) shutdown(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.cerr = err
		waiting := c.wait
		c.wait = map[string]chan Message{}
		c.mu.Unlock()
		close(c.closed)
		c.conn.Close()
		for _, ch := range waiting {
			close(ch)
		}
	})
}

// Close closes the connection.
func (c *Client) Close() error {
	c.shutdown(fmt.Errorf("%w: closed by client", ErrGone))
	return nil
}

// Execute runs a QMP command and returns its "return" value. A QMP error reply is returned as *Error.
func (c *Client) Execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	c.mu.Lock()
	if c.cerr != nil {
		err := c.cerr
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := strconv.FormatUint(c.nextID, 10)
	ch := make(chan Message, 1)
	c.wait[id] = ch
	c.mu.Unlock()

	req := map[string]any{"execute": cmd, "id": c.nextIDValue(id)}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		c.forget(id)
		return nil, fmt.Errorf("encode %s: %w", cmd, err)
	}
	if err := ctx.Err(); err != nil {
		c.forget(id)
		return nil, fmt.Errorf("%s: %w", cmd, err) // nothing sent: the connection stays usable
	}
	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetWriteDeadline(dl)
	}
	n, err := c.conn.Write(append(b, '\n'))
	_ = c.conn.SetWriteDeadline(time.Time{})
	c.wmu.Unlock()
	if err != nil && n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		// The deadline passed before a byte left: the stream is intact, only this call fails.
		c.forget(id)
		return nil, fmt.Errorf("%s: write: %w", cmd, context.DeadlineExceeded)
	}
	if err != nil {
		err = fmt.Errorf("%w: write %s: %v", ErrGone, cmd, err)
		c.shutdown(err)
		return nil, err
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%s: %w", cmd, c.Err())
		}
		if m.Kind == KindError {
			return nil, fmt.Errorf("%s: %w", cmd, m.Err)
		}
		return m.Return, nil
	case <-ctx.Done():
		c.forget(id)
		return nil, fmt.Errorf("%s: %w", cmd, ctx.Err())
	}
}

func (c *Client) nextIDValue(id string) json.RawMessage { return json.RawMessage(id) }

func (c *Client) forget(id string) {
	c.mu.Lock()
	delete(c.wait, id)
	c.mu.Unlock()
}

// HMP runs a human monitor command through human-monitor-command and returns its text output.
func (c *Client) HMP(ctx context.Context, cmdline string) (string, error) {
	r, err := c.Execute(ctx, "human-monitor-command", map[string]any{"command-line": cmdline})
	if err != nil {
		return "", err
	}
	var s string
	if err := json.Unmarshal(r, &s); err != nil {
		return "", fmt.Errorf("human-monitor-command %q: reply is not a string: %w", cmdline, ErrBadMessage)
	}
	return s, nil
}
