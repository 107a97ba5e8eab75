package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/aws/smithy-go"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// Startup waits out the worker's dependencies (PostgreSQL, the artifacts bucket, DynamoDB,
// Kinesis) at start-up instead of exiting: a worker started during an outage, or before the
// database of a new deployment accepts connections, starts serving when its dependencies come
// back, without a restart. Each dependency is tried with capped exponential backoff and
// jitter (worker.retry), one log line per failed attempt, until it answers, the context ends
// (SIGTERM) or worker.start_timeout passes. Health reports what it is waiting for, for
// /readyz; the HTTP server is up before the first attempt.
//
// Errors that need an operator (AccessDenied, bad credentials, a missing stream or bucket, no
// embeddings loaded) are waited out too: the operator may fix them while the worker waits, as
// for a permanent S3 error on the processing path. They are logged at error level with the
// action to take. A malformed config never gets here: it stops the process at load (exit 2).
type Startup struct {
	retry    RetryConfig
	deadline time.Time // zero: wait forever
	timeout  time.Duration
	log      *zap.Logger
	begin    time.Time

	mu      sync.Mutex
	waiting string // readiness message while waiting; "" once started
}

// attemptTimeout bounds one attempt (a connection to a black-holed address would otherwise
// hang it for the operating system's connect timeout), so the readiness message and the log
// keep moving.
const attemptTimeout = time.Minute

// NewStartup returns the waiter for a worker configured with cfg; worker.start_timeout counts
// from now. It does no I/O.
func NewStartup(cfg Config, log *zap.Logger) *Startup {
	s := &Startup{retry: cfg.Retry, timeout: cfg.StartTimeout, log: log.With(zap.String("component", "startup")),
		begin: time.Now(), waiting: "starting"}
	if cfg.StartTimeout > 0 {
		s.deadline = s.begin.Add(cfg.StartTimeout)
	}
	return s
}

// DependencyError names the dependency an attempt's error is about when one step talks to
// several (loading the model reads PostgreSQL and the artifacts bucket). Action, when set,
// says what an operator must do; no retry fixes it before that.
type DependencyError struct {
	Dependency string
	Action     string
	Err        error
}

func (e *DependencyError) Error() string { return e.Err.Error() }
func (e *DependencyError) Unwrap() error { return e.Err }

// StartTimeoutError is returned by Wait when worker.start_timeout passed while a dependency
// was still unavailable.
type StartTimeoutError struct {
	Dependency string
	Attempts   int
	Timeout    time.Duration
	Err        error // the last attempt's error
}

func (e *StartTimeoutError) Error() string {
	return fmt.Sprintf("%s still unavailable after worker.start_timeout (%s, %d attempts): %v", e.Dependency, e.Timeout, e.Attempts, e.Err)
}

func (e *StartTimeoutError) Unwrap() error { return e.Err }

// Wait runs attempt until it succeeds and returns nil. It returns ctx's error, at once, when
// ctx ends (the caller exits cleanly), and a *StartTimeoutError naming dep when
// worker.start_timeout passes first. dep names the dependency ("postgres", "s3", "dynamodb",
// "kinesis") in logs and readiness unless the error is a *DependencyError naming another.
func (s *Startup) Wait(ctx context.Context, dep string, attempt func(context.Context) error) error {
	backoff := s.retry.InitialBackoff
	var last error
	for n := 1; ; n++ {
		if n == 1 {
			// Later attempts keep the previous failure's message: it has the error and action.
			s.setWaiting(fmt.Sprintf("waiting for %s (attempt 1, %s since start)", dep, time.Since(s.begin).Round(time.Millisecond)))
		}
		err := s.try(ctx, attempt)
		if err == nil {
			if n > 1 {
				s.log.Info("dependency available", zap.String("dependency", dep), zap.Int("attempts", n),
					zap.Duration("duration", time.Since(s.begin)))
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("start-up interrupted while waiting for %s: %w", dep, ctx.Err())
		}
		name, action := classifyStartup(dep, err)
		if s.expired() {
			if errors.Is(err, context.DeadlineExceeded) && last != nil {
				err = last // cut short by the deadline: the previous attempt says more
			}
			return &StartTimeoutError{Dependency: name, Attempts: n, Timeout: s.timeout, Err: err}
		}
		last = err
		sleep := jitter(backoff)
		if !s.deadline.IsZero() {
			sleep = min(sleep, time.Until(s.deadline))
		}
		fields := []zap.Field{zap.String("dependency", name), zap.Int("attempt", n), zap.Duration("backoff", sleep), zap.Error(err)}
		msg := fmt.Sprintf("waiting for %s (attempt %d failed, %s since start, next attempt in %s): %v",
			name, n, time.Since(s.begin).Round(time.Millisecond), sleep.Round(time.Millisecond), err)
		if action != "" {
			// Only an operator fixes this; keep trying so that the fix needs no restart.
			msg += "; action: " + action
			s.log.Error("start-up blocked: dependency needs an operator, retrying", append(fields, zap.String("action", action))...)
		} else {
			s.log.Warn("dependency unavailable at start-up, retrying", fields...)
		}
		s.setWaiting(msg)
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("start-up interrupted while waiting for %s: %w", name, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, s.retry.MaxBackoff)
	}
}

// try runs one attempt bounded by attemptTimeout and the start deadline.
func (s *Startup) try(ctx context.Context, attempt func(context.Context) error) error {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	if !s.deadline.IsZero() {
		var c2 context.CancelFunc
		actx, c2 = context.WithDeadline(actx, s.deadline)
		defer c2()
	}
	return attempt(actx)
}

func (s *Startup) expired() bool { return !s.deadline.IsZero() && !time.Now().Before(s.deadline) }

// Started records that every dependency answered: Health is nil from now on.
func (s *Startup) Started() {
	s.setWaiting("")
	s.log.Info("dependencies available, starting", zap.Duration("duration", time.Since(s.begin)))
}

// Health is nil once Started, and otherwise says what start-up is waiting for (the
// dependency, the attempt and its last error, and the action when one is needed). Safe for
// concurrent use; /readyz calls it.
func (s *Startup) Health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting == "" {
		return nil
	}
	return errors.New(s.waiting)
}

func (s *Startup) setWaiting(msg string) {
	s.mu.Lock()
	s.waiting = msg
	s.mu.Unlock()
}

// jitter returns a pause in [b/2, b]: the fleet's workers, restarted together, do not hit a
// recovering dependency in step.
func jitter(b time.Duration) time.Duration {
	return b/2 + time.Duration(rand.Int64N(int64(b/2)+1))
}

// Error codes that no retry fixes until an operator acts, with the action.
var (
	awsCredentialCodes = map[string]bool{
		"InvalidAccessKeyId": true, "SignatureDoesNotMatch": true, "UnrecognizedClientException": true,
		"InvalidSignatureException": true, "ExpiredToken": true, "ExpiredTokenException": true,
		"InvalidClientTokenId": true, "MissingAuthenticationToken": true,
	}
	awsAccessCodes = map[string]bool{
		"AccessDenied": true, "AccessDeniedException": true, "AllAccessDisabled": true, "AccountProblem": true,
	}
)

// classifyStartup returns the dependency err is about (dep unless a *DependencyError names
// another) and, when only an operator can fix it, the action to take ("" for an outage).
func classifyStartup(dep string, err error) (name, action string) {
	name = dep
	var de *DependencyError
	if errors.As(err, &de) {
		if de.Dependency != "" {
			name = de.Dependency
		}
		if de.Action != "" {
			return name, de.Action
		}
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code := ae.ErrorCode()
		switch {
		case awsCredentialCodes[code]:
			return name, fmt.Sprintf("fix the AWS credentials (%s): the task role or the AWS_* environment", code)
		case awsAccessCodes[code]:
			return name, fmt.Sprintf("grant the task role access to %s (%s)", name, code)
		case code == "NoSuchBucket":
			return name, "create the bucket, or fix s3.buckets in the config"
		case code == "ResourceNotFoundException" && name == "kinesis":
			return name, "create the stream, or fix kinesis.stream / kinesis.region in the config"
		}
		return name, ""
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "28"): // invalid_authorization_specification, invalid_password
			return name, fmt.Sprintf("fix the PostgreSQL user in postgres.dsn or RECSTREAM_POSTGRES_PASSWORD (SQLSTATE %s)", pe.Code)
		case pe.Code == "3D000": // invalid_catalog_name
			return name, "create the database, or fix postgres.dsn"
		case pe.Code == "42501": // insufficient_privilege
			return name, "grant the PostgreSQL user access to postgres.schema (SQLSTATE 42501)"
		}
	}
	return name, ""
}
