package rsp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/kdstub/kdstub/qemuqmp/internal/dial"
)

// Client errors.
var (
	// ErrGone means the connection to the stub is closed (QEMU exited or was killed, or Close was called).
	ErrGone = errors.New("rsp: gdbstub connection gone")
	// ErrRunning means a request that needs a stopped VM was made while it runs. QEMU would treat the first byte
	// as a break-in and discard the packet, so the client refuses instead.
	ErrRunning = errors.New("rsp: VM is running")
	// ErrUnsupported means the stub does not offer the requested feature (empty reply, or not advertised).
	ErrUnsupported = errors.New("rsp: not supported by the stub")
	// ErrPacketLost means the VM turned out to be running when a request was sent: QEMU stopped it and
	// dropped the packet (qemu.md §2.6). The stop is delivered on Stops; the request may be retried.
	ErrPacketLost = errors.New("rsp: request lost because the VM was running")
)

// Client is one connection to QEMU's gdbstub.
//
// A reader goroutine owns the receive side and routes every packet either to the request waiting for it or,
// when the VM runs, to the Stops channel. Requests are serialised by a one-slot semaphore, so callers may use a
// Client from many goroutines; pipelined requests are written back to back and answered in order.
type Client struct {
	conn net.Conn
	log  *slog.Logger

	tx  chan struct{} // one-slot semaphore around request/reply exchanges
	wmu sync.Mutex    // serialises socket writes (Interrupt writes without holding tx)

	mu      sync.Mutex
	running bool
	stopSeq uint64 // counts stop replies, so Reconcile can tell a stale query-status answer
	waiter  *waiter
	orphans int    // replies still owed to requests whose caller gave up; dropped on arrival
	selG    string // thread selected for g/p/m; invalidated by every stop
	phys    int    // PhyMemMode as last set: -1 unknown

	stops  chan StopReply
	closed chan struct{}
	cerr   error
	once   sync.Once

	features map[string]string
	regs     *RegisterTable
	threads  []ThreadID
}

type waiter struct {
	want    int
	replies [][]byte
	stopOK  bool // the reply may be a stop reply (s, ?, bs)
	rcmd    bool // collect O packets until OK
	output  bytes.Buffer
	done    chan error
}

// Dial connects to a gdbstub at addr ("unix:/path", "tcp:host:port", "host:port" or a socket path) and runs
// the handshake: drain the stop QEMU sends when a client attaches to a running VM, qSupported, target.xml,
// Qqemu.sstep=0x7 and Qqemu.PhyMemMode:0 (both are global and survive reconnects, so they are always set).
func Dial(ctx context.Context, addr string, log *slog.Logger) (*Client, error) {
	conn, err := dial.Dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial gdbstub %s: %w", addr, err)
	}
	c, err := NewClient(ctx, conn, log)
	if err != nil {
		return nil, fmt.Errorf("gdbstub %s: %w", addr, err)
	}
	return c, nil
}

// SplitAddr turns "unix:/p", "tcp:h:p", "h:p" or "/p" into a network and address for net.Dial.
func SplitAddr(addr string) (string, string) { return dial.Split(addr) }

// NewClient runs the handshake over an established connection and starts the reader.
func NewClient(ctx context.Context, conn net.Conn, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		conn:   conn,
		log:    log,
		tx:     make(chan struct{}, 1),
		phys:   -1,
		stops:  make(chan StopReply, 64),
		closed: make(chan struct{}),
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	if err := c.drainAttachStop(ctx, br); err != nil {
		conn.Close()
		return nil, err
	}
	go c.readLoop(br)
	if err := c.handshake(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// drainAttachStop sends '?' and reads until its T05 answer, discarding the unsolicited T02 QEMU sends when a
// client connects to a running VM. '?' is always answered with T05 (qemu.md §2.1), so no timing guess is needed.
func (c *Client) drainAttachStop(ctx context.Context, br *bufio.Reader) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetReadDeadline(dl)
		defer c.conn.SetReadDeadline(time.Time{})
	}
	if _, err := c.conn.Write(Encode([]byte("?"))); err != nil {
		return fmt.Errorf("send '?': %w", err)
	}
	for i := 0; i < 8; i++ {
		p, err := ReadPacket(br)
		if err != nil {
			return fmt.Errorf("read reply to '?': %w", err)
		}
		if bytes.HasPrefix(p, []byte("T02")) {
			c.log.Debug("gdbstub: drained attach stop", "packet", string(p))
			continue
		}
		if IsStopReply(p) {
			return nil
		}
		return fmt.Errorf("unexpected reply %q to '?': %w", truncate(p), ErrMalformed)
	}
	return fmt.Errorf("no T05 after 8 packets: %w", ErrMalformed)
}

func (c *Client) handshake(ctx context.Context) error {
	sup, err := c.Request(ctx, "qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386;vContSupported+")
	if err != nil {
		return fmt.Errorf("qSupported: %w", err)
	}
	c.features = parseFeatures(string(sup))
	xmlDoc, err := c.readXfer(ctx, "features", "target.xml")
	if err != nil {
		return fmt.Errorf("read target.xml: %w", err)
	}
	regs, err := ParseTargetXML(xmlDoc, func(annex string) ([]byte, error) { return c.readXfer(ctx, "features", annex) })
	if err != nil {
		return fmt.Errorf("parse target.xml: %w", err)
	}
	c.regs = regs
	// Mask IRQs and timers while stepping. In record/replay QEMU refuses (E22): events come from the log and
	// must not be suppressed, so plain stepping is the only mode there.
	if err := c.expectOK(ctx, "Qqemu.sstep=0x7"); err != nil {
		var se *StubError
		if !errors.As(err, &se) {
			return err
		}
		c.log.Info("gdbstub refuses sstep=0x7 (record/replay?); stepping without IRQ masking", "err", err)
		if err := c.expectOK(ctx, "Qqemu.sstep=0x1"); err != nil {
			return err
		}
	}
	if err := c.expectOK(ctx, "Qqemu.PhyMemMode:0"); err != nil {
		return err
	}
	c.phys = 0
	threads, err := c.listThreads(ctx)
	if err != nil {
		return err
	}
	c.threads = threads
	return nil
}

func parseFeatures(s string) map[string]string {
	f := map[string]string{}
	for _, kv := range strings.Split(s, ";") {
		switch {
		case kv == "":
		case strings.HasSuffix(kv, "+") || strings.HasSuffix(kv, "-"):
			f[kv[:len(kv)-1]] = kv[len(kv)-1:]
		default:
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
	}
	return f
}

// Feature returns a qSupported feature value ("+", "-", or the text after '=') and whether it was advertised.
func (c *Client) Feature(name string) (string, bool) {
	v, ok := c.features[name]
	return v, ok
}

// Registers returns the register table read from target.xml.
func (c *Client) Registers() *RegisterTable { return c.regs }

// Threads returns the vCPU threads in CPU-index order (thread i is CPU i).
func (c *Client) Threads() []ThreadID { return append([]ThreadID(nil), c.threads...) }

// Stops delivers stop replies that arrive while the VM runs (after Continue, Interrupt, a QMP stop, or a
// breakpoint). It is never closed; select on Done as well.
func (c *Client) Stops() <-chan StopReply { return c.stops }

// Done is closed when the connection is gone.
func (c *Client) Done() <-chan struct{} { return c.closed }

// StopCount counts the stop replies seen so far; state read while stopped stays valid while it is unchanged.
func (c *Client) StopCount() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopSeq
}

// Running reports whether the client believes the VM runs.
func (c *Client) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running
}

func (c *Client) readXfer(ctx context.Context, object, annex string) ([]byte, error) {
	var out []byte
	for off := 0; ; {
		p, err := c.Request(ctx, fmt.Sprintf("qXfer:%s:read:%s:%x,%x", object, annex, off, 0xf00))
		if err != nil {
			return nil, err
		}
		if len(p) == 0 {
			return nil, fmt.Errorf("qXfer:%s:read:%s: %w", object, annex, ErrUnsupported)
		}
		out = append(out, p[1:]...)
		if len(out) > maxXMLDocBytes {
			return nil, fmt.Errorf("qXfer %s larger than %d bytes: %w", annex, maxXMLDocBytes, ErrTooLong)
		}
		switch p[0] {
		case 'l':
			return out, nil
		case 'm':
			off += len(p) - 1
		default:
			return nil, fmt.Errorf("qXfer:%s:read:%s: reply %q: %w", object, annex, truncate(p), ErrMalformed)
		}
	}
}

func (c *Client) listThreads(ctx context.Context) ([]ThreadID, error) {
	var ids []ThreadID
	q := "qfThreadInfo"
	for i := 0; i < 4096; i++ {
		p, err := c.Request(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
		if len(p) == 0 || p[0] == 'l' {
			if len(ids) == 0 {
				return nil, fmt.Errorf("stub reports no threads: %w", ErrMalformed)
			}
			return ids, nil
		}
		if p[0] != 'm' {
			return nil, fmt.Errorf("%s reply %q: %w", q, truncate(p), ErrMalformed)
		}
		for _, s := range strings.Split(string(p[1:]), ",") {
			t, err := ParseThreadID(s)
			if err != nil {
				return nil, err
			}
			ids = append(ids, t)
		}
		q = "qsThreadInfo"
	}
	return nil, fmt.Errorf("thread list does not end: %w", ErrMalformed)
}

// readLoop is the only reader of the connection.
func (c *Client) readLoop(br *bufio.Reader) {
	for {
		p, err := ReadPacket(br)
		if err != nil {
			if errors.Is(err, ErrChecksum) || errors.Is(err, ErrMalformed) {
				c.log.Warn("gdbstub: dropping bad packet", "err", err)
				c.failWaiter(err)
				continue
			}
			c.shutdown(fmt.Errorf("%w: %v", ErrGone, err))
			return
		}
		c.dispatch(p)
	}
}

func (c *Client) failWaiter(err error) {
	c.mu.Lock()
	w := c.waiter
	c.waiter = nil
	c.mu.Unlock()
	if w != nil {
		w.done <- err
	}
}

func (c *Client) dispatch(p []byte) {
	c.mu.Lock()
	w := c.waiter
	isStop := IsStopReply(p)
	if isStop {
		c.stopSeq++
		c.selG = "" // QEMU selects the reporting CPU for Hg and Hc after every stop (qemu.md §2.5)
	}
	output := len(p) > 1 && p[0] == 'O' && string(p) != "OK" && !isStop
	if isStop {
		c.orphans = 0 // the VM was running after all: QEMU dropped those packets
	} else if c.orphans > 0 {
		if !output {
			c.orphans--
		}
		c.mu.Unlock()
		c.log.Debug("gdbstub: dropped late reply of an abandoned request", "packet", truncate(p))
		return
	}
	switch {
	case w != nil && w.rcmd && output:
		if out, err := decodeHex(p[1:]); err == nil && w.output.Len() < MaxPacket*4 {
			w.output.Write(out)
		}
		c.mu.Unlock()
		return
	case w != nil && (!isStop || w.stopOK):
		w.replies = append(w.replies, p)
		if len(w.replies) < w.want {
			c.mu.Unlock()
			return
		}
		c.waiter = nil
		if isStop {
			c.running = false
		}
		c.mu.Unlock()
		w.done <- nil
		return
	case w != nil:
		// A stop while a plain request is outstanding: the VM was running (a QMP cont nobody told us about),
		// our first byte stopped it and QEMU dropped that packet. Packets pipelined behind it are still
		// answered; those replies must not reach the next request.
		c.waiter = nil
		c.running = false
		c.orphans = max(0, w.want-len(w.replies)-1)
		c.mu.Unlock()
		w.done <- ErrPacketLost
		c.deliverStop(p)
		return
	case isStop:
		c.running = false
		c.mu.Unlock()
		c.deliverStop(p)
		return
	}
	c.mu.Unlock()
	c.log.Warn("gdbstub: unsolicited packet dropped", "packet", truncate(p))
}

func (c *Client) deliverStop(p []byte) {
	sr, err := ParseStopReply(p)
	if err != nil {
		c.log.Warn("gdbstub: bad stop reply", "err", err)
		return
	}
	select {
	case c.stops <- sr:
	case <-c.closed:
	}
}

func (c *Client) shutdown(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.cerr = err
		w := c.waiter
		c.waiter = nil
		c.running = false
		c.mu.Unlock()
		close(c.closed)
		c.conn.Close()
		if w != nil {
			w.done <- err
		}
	})
}

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

func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.tx <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closed:
		return c.Err()
	}
}

func (c *Client) release() { <-c.tx }

// write sends raw bytes, bounded by ctx's deadline. A failed or partial write leaves the stream in an unknown
// state, so it ends the connection.
func (c *Client) write(ctx context.Context, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetWriteDeadline(dl)
		defer c.conn.SetWriteDeadline(time.Time{})
	}
	if n, err := c.conn.Write(b); err != nil {
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			// The caller's deadline had passed before a byte left: the stream is intact, only this call fails.
			return fmt.Errorf("write: %w", context.DeadlineExceeded)
		}
		err = fmt.Errorf("%w: write: %v", ErrGone, err)
		c.shutdown(err)
		return err
	}
	return nil
}

// exchangeLocked writes packets back to back and waits for one reply per packet. The caller holds tx.
func (c *Client) exchangeLocked(ctx context.Context, packets []string, stopOK, rcmd bool) ([][]byte, []byte, error) {
	w := &waiter{want: len(packets), stopOK: stopOK, rcmd: rcmd, done: make(chan error, 1)}
	if err := ctx.Err(); err != nil {
		return nil, nil, err // nothing sent: an abandoned request must not cost the connection
	}
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return nil, nil, ErrRunning
	}
	if err := c.errLocked(); err != nil {
		c.mu.Unlock()
		return nil, nil, err
	}
	c.waiter = w
	if stopOK {
		c.running = true // a step or reverse step: the VM runs until its stop reply
	}
	c.mu.Unlock()
	var buf []byte
	for _, p := range packets {
		buf = append(buf, Encode([]byte(p))...)
	}
	if err := c.write(ctx, buf); err != nil {
		c.mu.Lock()
		if c.waiter == w && c.errLocked() == nil {
			c.waiter = nil // nothing was sent (see write): undo
			if stopOK {
				c.running = false
			}
		}
		c.mu.Unlock()
		return nil, nil, err
	}
	select {
	case err := <-w.done:
		if err != nil {
			return nil, nil, err
		}
		return w.replies, w.output.Bytes(), nil
	case <-ctx.Done():
		c.mu.Lock()
		if c.waiter == w {
			c.waiter = nil
			// The replies will still come, in order. A step's stop reply is then delivered on Stops (the client
			// stays in the running state); plain replies are counted so they are not mistaken for the answers
			// to the next request.
			if !stopOK {
				c.orphans += w.want - len(w.replies)
			}
		}
		c.mu.Unlock()
		return nil, nil, fmt.Errorf("waiting for reply to %q: %w", truncate([]byte(packets[0])), ctx.Err())
	}
}

func (c *Client) errLocked() error {
	select {
	case <-c.closed:
		return c.cerr
	default:
		return nil
	}
}

// Request sends one packet and returns its reply. It must not be used for packets that resume the VM.
func (c *Client) Request(ctx context.Context, packet string) ([]byte, error) {
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	defer c.release()
	r, _, err := c.exchangeLocked(ctx, []string{packet}, false, false)
	if err != nil {
		return nil, err
	}
	return r[0], nil
}

func (c *Client) expectOK(ctx context.Context, packet string) error {
	p, err := c.Request(ctx, packet)
	if err != nil {
		return fmt.Errorf("%s: %w", packet, err)
	}
	return checkOK(packet, p)
}

func checkOK(packet string, p []byte) error {
	if string(p) == "OK" {
		return nil
	}
	if err := replyError(p); err != nil {
		return fmt.Errorf("%s: %w", truncate([]byte(packet)), err)
	}
	if len(p) == 0 {
		return fmt.Errorf("%s: %w", truncate([]byte(packet)), ErrUnsupported)
	}
	return fmt.Errorf("%s: reply %q: %w", truncate([]byte(packet)), truncate(p), ErrMalformed)
}

// Reconcile asks isRunning (QMP query-status) whether the VM runs and, if the client believed it stopped,
// switches to the running state. QMP cont is not reported to the gdbstub, so the VM can be resumed behind its back (QMP cont is not reported to the gdbstub),
// so that nothing but a break-in is sent until the next stop. Reconcile holds the request lock while it asks,
// so a step in flight is never mistaken for an external resume.
func (c *Client) Reconcile(ctx context.Context, isRunning func(context.Context) (bool, error)) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	c.mu.Lock()
	wasRunning, seq := c.running, c.stopSeq
	c.mu.Unlock()
	if wasRunning {
		return nil
	}
	run, err := isRunning(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	// Only an answer that saw the VM running while we knew it stopped, with no stop reply in between,
	// proves an external resume; anything else is a stale answer racing one of our own stops.
	if run && !c.running && c.stopSeq == seq {
		c.running = true
		c.selG = ""
		c.log.Debug("gdbstub: VM resumed externally")
	}
	c.mu.Unlock()
	return nil
}

// SettleStopped is the counterpart of Reconcile for a stop the stub never reported: when the client believes
// the VM runs but isRunning (QMP query-status) says it is stopped, the client switches to stopped and returns
// true. That happens when a QMP stop reached QEMU while the VM was already stopped (no event, no stop reply):
// the caller must only settle after giving a pending stop reply time to arrive. Holds the request lock.
func (c *Client) SettleStopped(ctx context.Context, isRunning func(context.Context) (bool, error)) (bool, error) {
	if err := c.acquire(ctx); err != nil {
		return false, err
	}
	defer c.release()
	c.mu.Lock()
	wasRunning, seq := c.running, c.stopSeq
	c.mu.Unlock()
	if !wasRunning {
		return false, nil
	}
	run, err := isRunning(ctx)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if run || !c.running || c.stopSeq != seq || c.waiter != nil {
		return false, nil
	}
	c.running = false
	c.selG = ""
	c.log.Debug("gdbstub: VM found stopped without a stop reply")
	return true, nil
}

// Continue resumes all vCPUs and returns at once; the stop arrives on Stops.
func (c *Client) Continue(ctx context.Context) error { return c.resume(ctx, "c") }

// ReverseContinue runs backwards to the previous breakpoint hit (replay mode only); the stop arrives on Stops.
// It is refused unless the stub advertised ReverseContinue+: outside replay it would abort QEMU.
func (c *Client) ReverseContinue(ctx context.Context) error {
	if c.features["ReverseContinue"] != "+" {
		return fmt.Errorf("bc: %w (no ReverseContinue+; QEMU is not replaying)", ErrUnsupported)
	}
	return c.resume(ctx, "bc")
}

func (c *Client) resume(ctx context.Context, packet string) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return nil
	}
	if err := c.errLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	if err := ctx.Err(); err != nil {
		c.mu.Unlock()
		return err
	}
	c.running = true // before the write: the stop reply may beat us back
	c.selG = ""
	c.mu.Unlock()
	if err := c.write(ctx, Encode([]byte(packet))); err != nil {
		c.mu.Lock()
		if c.errLocked() == nil {
			c.running = false // nothing was sent (see write)
		}
		c.mu.Unlock()
		return err
	}
	return nil
}

// Interrupt sends the 0x03 break-in if the VM runs; the stop arrives on Stops. It is a no-op when stopped:
// QEMU ignores ^C on a stopped VM and sends nothing back.
func (c *Client) Interrupt() error {
	c.mu.Lock()
	run := c.running
	c.mu.Unlock()
	if !run {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.write(ctx, []byte{0x03})
}

// Step single-steps the given vCPU (the others stay stopped; IRQs and timers are masked by sstep=0x7) and
// returns its stop reply.
func (c *Client) Step(ctx context.Context, t ThreadID) (StopReply, error) {
	return c.stepPacket(ctx, "vCont;s:"+t.String())
}

// ReverseStep steps one instruction backwards (replay mode only; refused unless ReverseStep+ was advertised,
// because outside replay QEMU aborts).
func (c *Client) ReverseStep(ctx context.Context, t ThreadID) (StopReply, error) {
	if c.features["ReverseStep"] != "+" {
		return StopReply{}, fmt.Errorf("bs: %w (no ReverseStep+; QEMU is not replaying)", ErrUnsupported)
	}
	if err := c.acquire(ctx); err != nil {
		return StopReply{}, err
	}
	defer c.release()
	if err := c.selectThreadLocked(ctx, "Hc", t); err != nil {
		return StopReply{}, err
	}
	r, _, err := c.exchangeLocked(ctx, []string{"bs"}, true, false)
	if err != nil {
		return StopReply{}, fmt.Errorf("bs: %w", err)
	}
	return parseStop("bs", r[0])
}

func (c *Client) stepPacket(ctx context.Context, packet string) (StopReply, error) {
	if err := c.acquire(ctx); err != nil {
		return StopReply{}, err
	}
	defer c.release()
	r, _, err := c.exchangeLocked(ctx, []string{packet}, true, false)
	if err != nil {
		return StopReply{}, fmt.Errorf("%s: %w", packet, err)
	}
	return parseStop(packet, r[0])
}

func parseStop(packet string, p []byte) (StopReply, error) {
	if err := replyError(p); err != nil {
		return StopReply{}, fmt.Errorf("%s: %w", packet, err)
	}
	sr, err := ParseStopReply(p)
	if err != nil {
		return StopReply{}, fmt.Errorf("%s: %w", packet, err)
	}
	return sr, nil
}

// selectThreadLocked sends Hg/Hc unless the thread is already selected (Hg is cached until the next stop).
func (c *Client) selectThreadLocked(ctx context.Context, op string, t ThreadID) error {
	key := op + t.String()
	c.mu.Lock()
	cached := op == "Hg" && c.selG == key
	c.mu.Unlock()
	if cached {
		return nil
	}
	r, _, err := c.exchangeLocked(ctx, []string{key}, false, false)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if err := checkOK(key, r[0]); err != nil {
		return err
	}
	if op == "Hg" {
		c.mu.Lock()
		c.selG = key
		c.mu.Unlock()
	}
	return nil
}

// Monitor runs an HMP command through qRcmd and returns its output.
func (c *Client) Monitor(ctx context.Context, cmd string) (string, error) {
	if err := c.acquire(ctx); err != nil {
		return "", err
	}
	defer c.release()
	pkt := "qRcmd," + string(encodeHex(nil, []byte(cmd)))
	r, out, err := c.exchangeLocked(ctx, []string{pkt}, false, true)
	if err != nil {
		return "", fmt.Errorf("qRcmd %q: %w", cmd, err)
	}
	if err := checkOK("qRcmd", r[0]); err != nil {
		return string(out), err
	}
	return string(out), nil
}

// Detach sends D;1 (plain D is refused once multiprocess is negotiated), which resumes the VM, and closes.
func (c *Client) Detach(ctx context.Context) error {
	err := c.expectOK(ctx, "D;1")
	c.Close()
	return err
}

// Close closes the connection without detaching: QEMU keeps the VM in whatever run state it has.
func (c *Client) Close() error {
	c.shutdown(fmt.Errorf("%w: closed by client", ErrGone))
	return nil
}
