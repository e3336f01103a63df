package main

import (
	"context"
	"log/slog"
	"regexp"
)

// tokenParam matches a token in a URL's query (libraries log request URIs:
// quic-go's http3 server does at debug level).
var tokenParam = regexp.MustCompile(`((?:^|[?&;])(?:token|last_event_id)=)[^&\s"]+`)

// redactHandler keeps tokens out of logs: string attributes that carry a
// token query parameter are rewritten before the record is written.
type redactHandler struct{ slog.Handler }

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, redactString(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(redactAttr(a))
		return true
	})
	return h.Handler.Handle(ctx, nr)
}

func (h redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = redactAttr(a)
	}
	return redactHandler{h.Handler.WithAttrs(out)}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h.Handler.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(redactString(a.Value.String()))
	case slog.KindGroup:
		g := a.Value.Group()
		out := make([]slog.Attr, len(g))
		for i, x := range g {
			out[i] = redactAttr(x)
		}
		a.Value = slog.GroupValue(out...)
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			a.Value = slog.StringValue(redactString(err.Error()))
		}
	}
	return a
}

func redactString(s string) string {
	return tokenParam.ReplaceAllString(s, "${1}REDACTED")
}
