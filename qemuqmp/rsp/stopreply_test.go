package rsp

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseStopReply(t *testing.T) {
	tests := []struct {
		in   string
		want StopReply
	}{
		{"T05thread:p01.01;", StopReply{Kind: 'T', Signal: 5, Thread: ThreadID{1, 1}, HasThread: true}},
		{"T02thread:01;", StopReply{Kind: 'T', Signal: 2, Thread: ThreadID{1, 1}, HasThread: true}},
		{"T05thread:p01.02;watch:fffff80000101100;", StopReply{Kind: 'T', Signal: 5, Thread: ThreadID{1, 2}, HasThread: true, Watch: WatchWrite, WatchAddr: 0xfffff80000101100}},
		{"T05thread:p01.01;rwatch:10;", StopReply{Kind: 'T', Signal: 5, Thread: ThreadID{1, 1}, HasThread: true, Watch: WatchRead, WatchAddr: 0x10}},
		{"T05thread:p01.01;awatch:20;", StopReply{Kind: 'T', Signal: 5, Thread: ThreadID{1, 1}, HasThread: true, Watch: WatchAccess, WatchAddr: 0x20}},
		{"T05swbreak:;thread:p1.2;", StopReply{Kind: 'T', Signal: 5, Thread: ThreadID{1, 2}, HasThread: true}},
		{"S05", StopReply{Kind: 'S', Signal: 5}},
		{"W00", StopReply{Kind: 'W', Signal: 0}},
		{"X09", StopReply{Kind: 'X', Signal: 9}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseStopReply([]byte(tt.in))
			require.NoError(t, err)
			tt.want.Raw = tt.in
			require.Equal(t, tt.want, got)
		})
	}
	require.True(t, StopReply{Kind: 'W'}.Exited())
	require.False(t, StopReply{Kind: 'T'}.Exited())
}

func TestParseStopReplyRejects(t *testing.T) {
	for _, in := range []string{"", "OK", "T5", "Tzz", "T05thread", "T05thread:pzz.1;", "T05watch:xyz;", "T05thread:123456789;"} {
		_, err := ParseStopReply([]byte(in))
		require.ErrorIs(t, err, ErrMalformed, in)
	}
}

func TestThreadIDString(t *testing.T) {
	require.Equal(t, "p1.2", ThreadID{1, 2}.String())
	require.Equal(t, "p1.-1", ThreadID{1, -1}.String())
	id, err := ParseThreadID("p1.-1")
	require.NoError(t, err)
	require.Equal(t, ThreadID{1, -1}, id)
	id, err = ParseThreadID("p01")
	require.NoError(t, err)
	require.Equal(t, ThreadID{1, -1}, id)
}

func FuzzParseStopReply(f *testing.F) {
	f.Add([]byte("T05thread:p01.02;watch:fffff80000101100;"))
	f.Add([]byte("T02thread:01;"))
	f.Add([]byte("W00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sr, err := ParseStopReply(data)
		if err != nil {
			return
		}
		require.Equal(t, string(data), sr.Raw)
		require.Contains(t, "TSWX", string(sr.Kind))
		if sr.Watch != NoWatch {
			require.Equal(t, byte('T'), sr.Kind)
		}
	})
}
