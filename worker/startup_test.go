package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func startupConfig(initial, max, timeout time.Duration) Config {
	c := DefaultConfig()
	c.Retry = RetryConfig{InitialBackoff: initial, MaxBackoff: max}
	c.StartTimeout = timeout
	return c
}

// The bug: a worker started while a dependency was down exited at once ("migrate: connect
// postgres …: unexpected EOF"). Wait retries with capped, jittered backoff, logs one line per
// failed attempt (dependency, attempt, backoff, error), says in Health what it waits for,
// and returns once the dependency answers.
func TestStartupWaitsWithCappedBackoff(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	st := NewStartup(startupConfig(10*time.Millisecond, 40*time.Millisecond, 0), zap.New(core))
	if err := st.Health(); err == nil {
		t.Fatal("Health before start-up = nil, want not ready")
	}
	var n atomic.Int32
	healthDuring := make(chan string, 1)
	err := st.Wait(context.Background(), "postgres", func(context.Context) error {
		switch n.Add(1) {
		case 7:
			return nil
		case 6:
			healthDuring <- fmt.Sprint(st.Health())
		}
		return io.ErrUnexpectedEOF
	})
	if err != nil {
		t.Fatalf("Wait = %v, want nil once the dependency answers", err)
	}
	if h := <-healthDuring; !strings.Contains(h, "waiting for postgres (attempt 5 failed") || !strings.Contains(h, io.ErrUnexpectedEOF.Error()) {
		t.Errorf("Health while waiting = %q, want it to name postgres and the attempt", h)
	}
	failed := logs.FilterMessage("dependency unavailable at start-up, retrying").All()
	if len(failed) != 6 {
		t.Fatalf("%d retry lines, want one per failed attempt (6); all: %v", len(failed), logs.All())
	}
	for i, e := range failed {
		f := e.ContextMap()
		if e.Level != zapcore.WarnLevel || f["dependency"] != "postgres" || f["attempt"] != int64(i+1) ||
			f["error"] != io.ErrUnexpectedEOF.Error() || f["component"] != "startup" {
			t.Errorf("line %d: %s %v", i, e.Level, f)
		}
		b := f["backoff"].(time.Duration)
		want := min(10*time.Millisecond<<i, 40*time.Millisecond)
		if b < want/2 || b > want {
			t.Errorf("attempt %d backoff %s, want in [%s, %s] (capped at max_backoff)", i+1, b, want/2, want)
		}
	}
	st.Started()
	if err := st.Health(); err != nil {
		t.Errorf("Health after Started = %v", err)
	}
}

// worker.start_timeout: past it Wait gives up with an error naming the dependency (the worker
// exits non-zero with it).
func TestStartupTimeoutNamesDependency(t *testing.T) {
	st := NewStartup(startupConfig(20*time.Millisecond, 50*time.Millisecond, 300*time.Millisecond), zap.NewNop())
	t0 := time.Now()
	refused := errors.New("dial tcp 127.0.0.1:4568: connect: connection refused")
	err := st.Wait(context.Background(), "dynamodb", func(context.Context) error { return refused })
	var te *StartTimeoutError
	if !errors.As(err, &te) || te.Dependency != "dynamodb" || !errors.Is(err, refused) {
		t.Fatalf("Wait = %v, want a StartTimeoutError for dynamodb wrapping the last error", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "dynamodb") || !strings.Contains(msg, "worker.start_timeout") {
		t.Errorf("message %q should name the dependency and the setting", msg)
	}
	if d := time.Since(t0); d < 300*time.Millisecond || d > 2*time.Second {
		t.Errorf("gave up after %s, want just after start_timeout (300ms)", d)
	}
	// A later step has no time left either: it gets one attempt and the same answer.
	err = st.Wait(context.Background(), "kinesis", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	if !errors.As(err, &te) || te.Dependency != "kinesis" {
		t.Fatalf("Wait after the deadline = %v, want a StartTimeoutError for kinesis", err)
	}
}

// SIGTERM during the wait: Wait returns at once (mid-attempt or mid-backoff).
func TestStartupStopsOnCancel(t *testing.T) {
	for _, tc := range []struct {
		name    string
		attempt func(ctx context.Context) error
	}{
		{"during backoff", func(context.Context) error { return io.ErrUnexpectedEOF }},
		{"during attempt", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := NewStartup(startupConfig(time.Hour, time.Hour, 0), zap.NewNop())
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			t0 := time.Now()
			err := st.Wait(ctx, "kinesis", tc.attempt)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Wait = %v, want context.Canceled", err)
			}
			if d := time.Since(t0); d > time.Second {
				t.Errorf("Wait returned %s after cancel", d)
			}
		})
	}
}

// Errors only an operator fixes are still waited out (the fix needs no restart) but logged at
// error level with the action; outages are warnings without one.
func TestClassifyStartup(t *testing.T) {
	api := func(code string) error {
		return fmt.Errorf("operation error: %w", &smithy.GenericAPIError{Code: code, Message: "m"})
	}
	cases := []struct {
		name, dep  string
		err        error
		wantDep    string
		wantAction string // substring; "" means an outage
	}{
		{"eof", "postgres", io.ErrUnexpectedEOF, "postgres", ""},
		{"throttled", "kinesis", api("ProvisionedThroughputExceededException"), "kinesis", ""},
		{"access denied s3", "s3", api("AccessDenied"), "s3", "grant the task role access to s3"},
		{"access denied dynamodb", "dynamodb", api("AccessDeniedException"), "dynamodb", "grant"},
		{"bad key", "kinesis", api("UnrecognizedClientException"), "kinesis", "fix the AWS credentials"},
		{"no bucket", "s3", api("NoSuchBucket"), "s3", "create the bucket"},
		{"no stream", "kinesis", api("ResourceNotFoundException"), "kinesis", "create the stream"},
		{"pg password", "postgres", &pgconn.PgError{Code: "28P01"}, "postgres", "RECSTREAM_POSTGRES_PASSWORD"},
		{"pg no database", "postgres", &pgconn.PgError{Code: "3D000"}, "postgres", "create the database"},
		{"pg privilege", "postgres", &pgconn.PgError{Code: "42501"}, "postgres", "grant"},
		{"pg shutting down", "postgres", &pgconn.PgError{Code: "57P03"}, "postgres", ""},
		{"named by the step", "postgres", &DependencyError{Dependency: "s3", Err: io.ErrUnexpectedEOF}, "s3", ""},
		{"action from the step", "postgres", &DependencyError{Dependency: "postgres", Action: "load embeddings", Err: errors.New("none")}, "postgres", "load embeddings"},
		{"code under a dependency", "postgres", &DependencyError{Dependency: "s3", Err: api("AccessDenied")}, "s3", "grant the task role access to s3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dep, action := classifyStartup(tc.dep, tc.err)
			if dep != tc.wantDep || (tc.wantAction == "") != (action == "") || !strings.Contains(action, tc.wantAction) {
				t.Fatalf("classifyStartup = %q, %q; want %q, %q", dep, action, tc.wantDep, tc.wantAction)
			}
		})
	}
}

// An error that needs an operator is logged at error level with the action, and Health says it.
func TestStartupLogsOperatorAction(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	st := NewStartup(startupConfig(5*time.Millisecond, 5*time.Millisecond, 0), zap.New(core))
	var n atomic.Int32
	health := make(chan string, 1)
	denied := fmt.Errorf("get s3://b/k: %w", &smithy.GenericAPIError{Code: "AccessDenied"})
	err := st.Wait(context.Background(), "s3", func(context.Context) error {
		if n.Add(1) == 3 {
			health <- fmt.Sprint(st.Health())
			return nil
		}
		return denied
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := logs.FilterLevelExact(zapcore.ErrorLevel).All()
	if len(lines) != 2 || lines[0].ContextMap()["action"] == nil || lines[0].ContextMap()["dependency"] != "s3" {
		t.Fatalf("error lines %v, want two with the action", logs.All())
	}
	if h := <-health; !strings.Contains(h, "s3") || !strings.Contains(h, "action: grant") {
		t.Errorf("Health = %q, want the dependency and the action", h)
	}
}
