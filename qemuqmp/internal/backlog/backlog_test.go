package backlog

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestQueueKeepsOrderAndDropsOldestWhenFull(t *testing.T) {
	done := make(chan struct{})
	defer close(done)
	var dropped []int
	q := New[int](3, 0, done, func(v int) { dropped = append(dropped, v) })
	// With an unbuffered Out and nobody reading, the pump takes the first value and holds it; the rest back up.
	q.Push(1)
	require.Eventually(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.q) == 0
	}, 5*time.Second, time.Millisecond)
	for i := 2; i <= 6; i++ {
		q.Push(i)
	}
	var got []int
	for range 4 {
		select {
		case v := <-q.Out():
			got = append(got, v)
		case <-time.After(5 * time.Second):
			t.Fatal("value not delivered")
		}
	}
	require.Equal(t, []int{1, 4, 5, 6}, got, "the pump's value, then the newest three in order")
	require.Equal(t, []int{2, 3}, dropped)
}

func TestQueueClosesOutAndIgnoresPushAfterDone(t *testing.T) {
	done := make(chan struct{})
	q := New[string](4, 1, done, nil)
	close(done)
	select {
	case _, ok := <-q.Out():
		require.False(t, ok, "Out is closed after done")
	case <-time.After(5 * time.Second):
		t.Fatal("Out not closed")
	}
	q.Push("late") // must not block or panic
}
