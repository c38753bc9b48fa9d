// Package qmp is a QEMU Machine Protocol client: JSON lines over a socket, replies matched to commands by id,
// asynchronous events delivered on a channel, HMP pass-through, and parsers for the HMP output kdstub needs.
//
// It is written here rather than taken from go-qemu because that client dies on any reply over 64 KiB and
// drops or blocks on events (qemu.md §9); `info mtree` and `info registers -a` routinely exceed 64 KiB.
package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Error is a QMP error reply.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s", e.Class, e.Desc) }

// Event is an asynchronous QMP event such as STOP, RESUME, RESET or SHUTDOWN.
type Event struct {
	Name string
	Data json.RawMessage
	Time time.Time
}

// Kind classifies a decoded QMP line.
type Kind int

// Message kinds.
const (
	KindReturn Kind = iota + 1
	KindError
	KindEvent
	KindGreeting
)

// Message is one decoded line from QEMU.
type Message struct {
	Kind   Kind
	ID     json.RawMessage // as sent with the command; nil when absent
	Return json.RawMessage
	Err    *Error
	Event  Event
	QMP    json.RawMessage // greeting body
}

// ErrBadMessage wraps every decoding failure.
var ErrBadMessage = errors.New("qmp: bad message")

type wire struct {
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	ID        json.RawMessage `json:"id"`
	QMP       json.RawMessage `json:"QMP"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// DecodeMessage decodes one QMP line.
func DecodeMessage(line []byte) (Message, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return Message{}, fmt.Errorf("line %q is not a JSON object: %w", short(line), ErrBadMessage)
	}
	var w wire
	if err := json.Unmarshal(line, &w); err != nil {
		return Message{}, fmt.Errorf("decode %q: %v: %w", short(line), err, ErrBadMessage)
	}
	m := Message{ID: w.ID}
	switch {
	case w.Event != "":
		m.Kind = KindEvent
		m.Event = Event{Name: w.Event, Data: w.Data}
		if ts := w.Timestamp; ts != nil && ts.Seconds >= 0 && ts.Seconds < 1<<40 && ts.Microseconds >= 0 && ts.Microseconds < 1e6 {
			m.Event.Time = time.Unix(ts.Seconds, ts.Microseconds*1000)
		}
	case w.Error != nil:
		m.Kind = KindError
		m.Err = w.Error
	case w.Return != nil:
		m.Kind = KindReturn
		m.Return = w.Return
	case w.QMP != nil:
		m.Kind = KindGreeting
		m.QMP = w.QMP
	default:
		return Message{}, fmt.Errorf("line %q is neither return, error, event nor greeting: %w", short(line), ErrBadMessage)
	}
	return m, nil
}

func short(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}
