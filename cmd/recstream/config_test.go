package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/recstream/recstream/internal/config"
)

// The shipped config.yaml must decode strictly and say exactly what DefaultConfig says, so the
// documented file and the built-in defaults never drift apart.
func TestShippedConfigMatchesDefaults(t *testing.T) {
	got := DefaultConfig()
	// Start from zero so every key must come from the file.
	var fromFile Config
	if err := config.LoadFile("../../config.yaml", &fromFile, nil); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	if !reflect.DeepEqual(fromFile, got) {
		t.Fatalf("config.yaml and DefaultConfig differ:\n file:     %+v\n defaults: %+v", fromFile, got)
	}
}

// Every key in config.yaml carries a comment (on its line or the line above).
func TestShippedConfigIsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		trim := strings.TrimSpace(l)
		if trim == "" || strings.HasPrefix(trim, "#") || !strings.Contains(trim, ":") {
			continue
		}
		above := ""
		if i > 0 {
			above = strings.TrimSpace(lines[i-1])
		}
		section := strings.HasSuffix(strings.SplitN(trim, "#", 2)[0], ":") || strings.HasSuffix(strings.TrimSpace(strings.SplitN(trim, "#", 2)[0]), ":")
		if !strings.Contains(l, "#") && !strings.HasPrefix(above, "#") && !section {
			t.Errorf("config.yaml:%d: key without a comment: %s", i+1, trim)
		}
	}
}

func TestRunExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	table := append(commands(), command{name: "noop-test", summary: "test only", run: func(ctx context.Context, app *App, args []string) error {
		return newFlagSet(app, "noop-test").parse(args)
	}})

	for _, tc := range []struct {
		name     string
		args     []string
		env      []string
		wantCode int
		wantErr  string
	}{
		{"ok", []string{"--config", "../../config.yaml", "noop-test"}, nil, exitOK, ""},
		{"unknown command", []string{"--config", "../../config.yaml", "nope"}, nil, exitUsage, `unknown command "nope"`},
		{"unknown key", []string{"--config", write("a.yaml", "worker:\n  flush:\n    max_agee: 1s\n"), "noop-test"}, nil, exitUsage, "worker.flush.max_agee: unknown key"},
		{"bad value", []string{"--config", write("b.yaml", "worker:\n  shutdown_timeout: forever\n"), "noop-test"}, nil, exitUsage, `worker.shutdown_timeout: invalid value "forever"`},
		{"negative start_timeout", []string{"--config", write("d.yaml", "worker:\n  start_timeout: -1s\n"), "noop-test"}, nil, exitUsage, "worker.start_timeout: must be >= 0 (0 waits forever), got -1s"},
		// A malformed config is not waited out like an outage: the worker exits 2 at once.
		{"worker with malformed dsn", []string{"--config", "../../config.yaml", "worker"}, []string{"RECSTREAM_POSTGRES_DSN=postgres://a b@:x"}, exitUsage, "postgres.dsn: cannot parse"},
		{"bad env", []string{"--config", "../../config.yaml", "noop-test"}, []string{"RECSTREAM_INFERENCE_K=0"}, exitUsage, "inference.k: must be between 1 and 1000, got 0"},
		{"password in file", []string{"--config", write("c.yaml", "postgres:\n  password: hunter2\n"), "noop-test"}, nil, exitUsage, "set RECSTREAM_POSTGRES_PASSWORD"},
		{"missing file", []string{"--config", filepath.Join(dir, "none.yaml"), "noop-test"}, nil, exitUsage, "read config"},
		{"bad subcommand flag", []string{"--config", "../../config.yaml", "noop-test", "--bogus"}, nil, exitUsage, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := runCommands(context.Background(), table, tc.args, tc.env, &out, &errb)
			if code != tc.wantCode {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tc.wantCode, errb.String())
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Fatalf("stderr does not contain %q:\n%s", tc.wantErr, errb.String())
			}
			if strings.Contains(errb.String(), "hunter2") {
				t.Fatal("a secret reached the output")
			}
		})
	}
}
