package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// TestLogsRedactTokens: a request URI, an error or a message carrying a
// token is logged without it, in both formats.
func TestLogsRedactTokens(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		log, err := newLoggerTo(&buf, format, &slog.HandlerOptions{Level: slog.LevelDebug})
		if err != nil {
			t.Fatal(err)
		}
		secret := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln"
		log.Debug("handling request", "uri", "/v1/sse?channel=news&token="+secret)
		log.With("req", "/v1/ws?token="+secret).Info("x", "err", errors.New("GET /v1/stream?last_event_id=1-0&token="+secret+": failed"))
		log.Info("msg /v1/ws?token=" + secret)
		log.InfoContext(context.Background(), "g", slog.Group("http", slog.String("url", "?token="+secret)))
		if strings.Contains(buf.String(), secret) || strings.Contains(buf.String(), "c2ln") {
			t.Fatalf("%s log leaks the token:\n%s", format, buf.String())
		}
		if !strings.Contains(buf.String(), "token=REDACTED") || !strings.Contains(buf.String(), "channel=news") {
			t.Fatalf("%s log over-redacted or not redacted:\n%s", format, buf.String())
		}
	}
}
