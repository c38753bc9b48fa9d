// Package backlog hands values from a producer that must never block (a socket reader) to a consumer that may
// be slow or absent, in order, through a bounded queue that drops the oldest value when full.
package backlog

import "sync"

// Queue is one producer-to-channel backlog; a pump goroutine moves queued values to Out.
type Queue[T any] struct {
	mu     sync.Mutex
	q      []T
	max    int
	kick   chan struct{}
	out    chan T
	done   <-chan struct{}
	onDrop func(T)
}

// New starts a queue of at most max values feeding a channel buffered by outBuf. Out is closed, and Push
// ignored, once done is closed. onDrop (may be nil) sees each value dropped because the backlog was full.
func New[T any](max, outBuf int, done <-chan struct{}, onDrop func(T)) *Queue[T] {
	q := &Queue[T]{max: max, kick: make(chan struct{}, 1), out: make(chan T, outBuf), done: done, onDrop: onDrop}
	go q.pump()
	return q
}

// Out delivers the values in push order.
func (q *Queue[T]) Out() <-chan T { return q.out }

// Push queues v without blocking.
func (q *Queue[T]) Push(v T) {
	select {
	case <-q.done:
		return
	default:
	}
	q.mu.Lock()
	if len(q.q) >= q.max {
		if q.onDrop != nil {
			q.onDrop(q.q[0])
		}
		q.q = q.q[1:]
	}
	q.q = append(q.q, v)
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

func (q *Queue[T]) pump() {
	defer close(q.out)
	for {
		q.mu.Lock()
		var v T
		have := len(q.q) > 0
		if have {
			v = q.q[0]
			q.q = q.q[1:]
		}
		q.mu.Unlock()
		if !have {
			select {
			case <-q.kick:
				continue
			case <-q.done:
				return
			}
		}
		select {
		case q.out <- v:
		case <-q.done:
			return
		}
	}
}
