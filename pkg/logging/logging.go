// Package logging builds the *slog.Logger every bootchain binary injects into its
// services.
package logging

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Options are the logging flags.
type Options struct {
	// Level: debug, info, warn, error.
	Level string
	// Format: text or json.
	Format string
}

// AddFlags binds --log-level and --log-format.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	if o.Level == "" {
		o.Level = "info"
	}
	if o.Format == "" {
		o.Format = "text"
	}
	fs.StringVar(&o.Level, "log-level", o.Level, "log level: debug, info, warn, error")
	fs.StringVar(&o.Format, "log-format", o.Format, "log format: text or json")
}

// New returns a logger writing to w.
func New(w io.Writer, o Options) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(orDefault(o.Level, "info")))); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", o.Level)
	}
	ho := &slog.HandlerOptions{Level: lvl}
	switch orDefault(o.Format, "text") {
	case "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", o.Format)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
