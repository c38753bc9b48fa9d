package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"testing"
	"time"
)

func TestDbgFlake(t *testing.T) {
	ls := startLiveStub(t, 2, viaKDNETTarget)
	for i := range 25 {
		var logs, out bytes.Buffer
		lg := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := runKD(ctx, lg, &out, kdOptions{KDNETTarget: ls.addr, Key: ls.key, Commands: "~1; r rip; !pcr", JSON: true, AttachTimeout: 12 * time.Second})
		cancel()
		if err != nil {
			os.WriteFile("/tmp/e2flake.log", logs.Bytes(), 0o644)
			t.Fatalf("run %d: %v", i, err)
		}
	}
}
