package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
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
		// An unknown RECSTREAM_* variable (a typo in a task definition) used to be ignored,
		// leaving the default in force.
		{"env typo", []string{"--config", "../../config.yaml", "noop-test"}, []string{"RECSTREAM_WORKER_FLUSH_MAXAGE=2s"}, exitUsage,
			"unknown environment variable RECSTREAM_WORKER_FLUSH_MAXAGE: no config key has that name; did you mean RECSTREAM_WORKER_FLUSH_MAX_AGE (worker.flush.max_age)?"},
		{"env zero backoff", []string{"--config", "../../config.yaml", "noop-test"}, []string{"RECSTREAM_WORKER_RETRY_INITIAL_BACKOFF=0s"}, exitUsage, "worker.retry.initial_backoff: must be > 0"},
		{"env zero flush age", []string{"--config", "../../config.yaml", "noop-test"}, []string{"RECSTREAM_WORKER_FLUSH_MAX_AGE=0s"}, exitUsage, "worker.flush.max_age: must be >= 1s"},
		{"secrets and non-config env accepted", []string{"--config", "../../config.yaml", "noop-test"}, []string{"RECSTREAM_POSTGRES_PASSWORD=hunter2",
			"RECSTREAM_MYSQL_PASSWORD=hunter2", "RECSTREAM_AWS_OPLOG=" + filepath.Join(dir, "ops.log"), "RECSTREAM_IAM_OPLOG=x", "RECSTREAM_LEASE_BENCH=1", "RECSTREAM_TEST_LOG=1"}, exitOK, ""},
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

// TestEveryRecstreamEnvIsKnown: every RECSTREAM_* variable the project names (code,
// tests, scripts, Makefile, Dockerfile, deployment files, docs) is a config key or one of
// config.NonConfigEnv, so the loader, which rejects unknown RECSTREAM_* variables, never
// refuses one the project itself sets.
func TestEveryRecstreamEnvIsKnown(t *testing.T) {
	root := "../.."
	name := regexp.MustCompile(`RECSTREAM_[A-Z0-9_]*[A-Z0-9]`)
	// Made-up names: the config package's own test structs, and this file's typos.
	skip := map[string]bool{"internal/config/config_test.go": true, "cmd/recstream/config_test.go": true}
	found := map[string]string{} // name -> first file:line
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && rel != "." && d.Name() != ".ci" || d.Name() == "testdata" || d.Name() == "out" {
				return filepath.SkipDir
			}
			return nil
		}
		switch ext := filepath.Ext(rel); {
		case skip[rel]:
			return nil
		case ext == ".go" || ext == ".sh" || ext == ".md" || ext == ".json" || ext == ".yaml" || ext == ".yml" || ext == ".crontab",
			d.Name() == "Makefile" || d.Name() == "Dockerfile" || strings.HasPrefix(rel, ".ci/"):
		default:
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range name.FindAllStringIndex(line, -1) {
				if m[1] < len(line) && (line[m[1]] == '_' || line[m[1]] == '*') {
					continue // a pattern such as RECSTREAM_BATCH_*
				}
				n := line[m[0]:m[1]]
				if _, ok := found[n]; !ok {
					found[n] = fmt.Sprintf("%s:%d", rel, i+1)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) < 20 {
		t.Fatalf("found only %d RECSTREAM_* names under %s: %v", len(found), root, found)
	}
	for n, where := range found {
		if unknown := config.UnknownEnv(&Config{}, []string{n + "=x"}); len(unknown) > 0 {
			t.Errorf("%s (%s) is neither a config key nor in config.NonConfigEnv: the config loader rejects it", n, where)
		}
	}
}
