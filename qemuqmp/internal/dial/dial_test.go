package dial

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDialWaitsForLateListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	go func() {
		time.Sleep(50 * time.Millisecond)
		l, err := net.Listen("unix", path)
		if err != nil {
			return
		}
		defer l.Close()
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
	}()
	conn, err := Dial(context.Background(), "unix:"+path)
	require.NoError(t, err)
	conn.Close()
}

func TestDialGivesUpWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, filepath.Join(t.TempDir(), "never"))
	require.Error(t, err)
	require.Less(t, time.Since(start), 2*time.Second)
}

func TestSplit(t *testing.T) {
	n, a := Split("tcp:127.0.0.1:1")
	require.Equal(t, [2]string{"tcp", "127.0.0.1:1"}, [2]string{n, a})
}
