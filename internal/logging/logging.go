// Package logging builds the one *zap.Logger every recstream component receives.
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

// Config is the `log` config section.
type Config struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json, console, or auto (console when stderr is a terminal)
}

// DefaultConfig is the log section of the shipped config.yaml.
func DefaultConfig() Config { return Config{Level: "info", Format: "auto"} }

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if _, err := zapcore.ParseLevel(c.Level); err != nil {
		return fmt.Errorf("level: must be debug, info, warn or error, got %q", c.Level)
	}
	switch c.Format {
	case "json", "console", "auto":
	default:
		return fmt.Errorf("format: must be json, console or auto, got %q", c.Format)
	}
	return nil
}

// New returns a logger writing to w (the process's stderr): JSON lines by default (what
// CloudWatch and log queries want), console encoding when asked for or when format is auto and
// w is a terminal.
func New(c Config, w io.Writer) (*zap.Logger, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("log.%w", err)
	}
	lvl, _ := zapcore.ParseLevel(c.Level)
	format := c.Format
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "console"
		}
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	encCfg.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if strings.EqualFold(format, "console") {
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.AddCaller()), nil
}
