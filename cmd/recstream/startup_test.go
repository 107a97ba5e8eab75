package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/jackc/pgx/v5"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// proxyAWS puts a proxy in front of the local stack's service of config section ("kinesis",
// "dynamodb") for the worker (the test's own clients keep the direct endpoint).
func (se *systemEnv) proxyAWS(t *testing.T, section string) *stacktest.Proxy {
	t.Helper()
	ep := stacktest.Endpoint(t, section)
	p := stacktest.NewProxy(t, strings.TrimPrefix(ep, "http://"))
	se.env = append(se.env, "RECSTREAM_"+strings.ToUpper(section)+"_ENDPOINT=http://"+p.Addr())
	return p
}

// artifactsOnS3 copies the test's file:// artifacts (the trained model) to a unique prefix of
// the S3 gateway's artifacts bucket and points the worker at it through a proxy.
func (se *systemEnv) artifactsOnS3(t *testing.T) *stacktest.Proxy {
	t.Helper()
	var dir string
	for _, kv := range se.env {
		if v, ok := strings.CutPrefix(kv, "RECSTREAM_S3_BUCKETS_ARTIFACTS=file://"); ok {
			dir = v
		}
	}
	src, err := objstore.Open("file://"+dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := stacktest.S3Store(t, "artifacts", "rs-startup-")
	ctx := context.Background()
	objs, err := src.List(ctx, "")
	if err != nil || len(objs) == 0 {
		t.Fatalf("list artifacts in %s: %d objects, %v", dir, len(objs), err)
	}
	for _, o := range objs {
		r, err := src.Get(ctx, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		err = dst.Put(ctx, o.Key, r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := se.proxyAWS(t, "s3")
	se.env = append(se.env, "RECSTREAM_S3_BUCKETS_ARTIFACTS="+dst.URL(""))
	return p
}

// stoppedAWS puts a stopped proxy in front of the worker's endpoint of section.
func stoppedAWS(section string) func(*testing.T, *systemEnv) *stacktest.Proxy {
	return func(t *testing.T, se *systemEnv) *stacktest.Proxy {
		p := se.proxyAWS(t, section)
		p.Stop()
		return p
	}
}

// waitingFor waits until the worker is alive (/healthz 200) but not ready (/readyz 503 saying
// it waits for dep), and has logged at least two failed attempts for dep.
func (se *systemEnv) waitingFor(t *testing.T, dep string, logs *syncBuffer) {
	t.Helper()
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		code, _ := se.get("/healthz")
		return code == http.StatusOK
	}, "/healthz never answered while %s was unreachable; logs:\n%s", dep, logs)
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		code, body := se.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "waiting for "+dep)
	}, "/readyz never said it waits for %s; logs:\n%s", dep, logs)
	attempt2 := regexp.MustCompile(`"dependency":"` + dep + `","attempt":2,"backoff":"[^"]+","error":"[^"]+"`)
	stacktest.Eventually(t, 60*time.Second, 100*time.Millisecond, func() bool { return attempt2.MatchString(logs.String()) },
		"no second attempt logged for %s (dependency, attempt, backoff, error); logs:\n%s", dep, logs)
	if _, body := se.get("/readyz"); !strings.Contains(body, `"startup":"waiting for `+dep) {
		t.Errorf("/readyz while waiting for %s: %s", dep, body)
	}
	if l := logs.String(); strings.Contains(l, stacktest.LocalSecretKey) || strings.Contains(strings.ToLower(l), "password=") {
		t.Errorf("a secret in the start-up logs:\n%s", l)
	}
}

// TestSystemWorkerWaitsForDependenciesAtStart pins the bug where `recstream worker` started
// while PostgreSQL dropped connections exited at once ("migrate: connect postgres …:
// unexpected EOF"), and likewise without DynamoDB or Kinesis. Now the worker is alive
// (/healthz) and not ready (/readyz names the dependency) while it waits, logs each attempt,
// and once the dependency is back it starts, processes events, and stops cleanly.
func TestSystemWorkerWaitsForDependenciesAtStart(t *testing.T) {
	if testing.Short() {
		t.Skip("system test skipped with -short (CI runs it)")
	}
	se := newSystemEnv(t, 1)
	base := se.env
	written := 0
	for i, tc := range []struct {
		dep string
		cut func(*testing.T, *systemEnv) *stacktest.Proxy
	}{
		// Accept-then-close reproduces the report's "unexpected EOF".
		{"postgres", func(_ *testing.T, se *systemEnv) *stacktest.Proxy { se.proxy.Drop(); return se.proxy }},
		{"dynamodb", stoppedAWS("dynamodb")},
		{"kinesis", stoppedAWS("kinesis")},
		// The artifacts bucket on the S3 gateway (the model is read from it after PostgreSQL
		// named the live version).
		{"s3", func(t *testing.T, se *systemEnv) *stacktest.Proxy { p := se.artifactsOnS3(t); p.Stop(); return p }},
	} {
		t.Run(tc.dep, func(t *testing.T) {
			se.env = append(base[:len(base):len(base)], "RECSTREAM_WORKER_RETRY_INITIAL_BACKOFF=100ms", "RECSTREAM_WORKER_RETRY_MAX_BACKOFF=1s")
			proxy := tc.cut(t, se)
			logs := &syncBuffer{}
			stop := se.startWorker(t, logs)
			se.waitingFor(t, tc.dep, logs)

			proxy.Start()
			stacktest.Eventually(t, 60*time.Second, 200*time.Millisecond, func() bool {
				code, _ := se.get("/readyz")
				return code == http.StatusOK
			}, "worker never became ready once %s was back; logs:\n%s", tc.dep, logs)
			const n = 20
			se.produce(t, n, uint64(100+i))
			written += n
			stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool { return se.output(t).Records >= written },
				"events not processed after %s came back; logs:\n%s", tc.dep, logs)
			if code := stop(); code != exitOK {
				t.Fatalf("exit code %d after SIGTERM; logs:\n%s", code, logs)
			}
			if rep := se.output(t); rep.Records != written || rep.Duplicates != 0 {
				t.Fatalf("%d records, %d duplicates; want %d, 0", rep.Records, rep.Duplicates, written)
			}
		})
		if t.Failed() {
			return
		}
	}

	// A stream that does not exist yet needs an operator, not a restart: the worker says what
	// to do (error level, action) and starts once the stream is created.
	t.Run("missing stream", func(t *testing.T) {
		name := stacktest.UniqueName("rs-system-late-")
		ddb, err := awsenv.DynamoDB(context.Background(), awsenv.DynamoDBConfig{LeaseTable: name, Region: "us-east-1", Endpoint: stacktest.Endpoint(t, "dynamodb")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(name)})
		})
		se.env = append(base[:len(base):len(base)], "RECSTREAM_WORKER_RETRY_INITIAL_BACKOFF=100ms", "RECSTREAM_WORKER_RETRY_MAX_BACKOFF=1s",
			"RECSTREAM_KINESIS_STREAM="+name, "RECSTREAM_DYNAMODB_LEASE_TABLE="+name)
		logs := &syncBuffer{}
		stop := se.startWorker(t, logs)
		se.waitingFor(t, "kinesis", logs)
		action := regexp.MustCompile(`"level":"error".*"dependency":"kinesis".*"action":"create the stream`)
		stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool { return action.MatchString(logs.String()) },
			"no error line with the action for the missing stream; logs:\n%s", logs)

		stacktest.CreateStream(t, se.kc, name, 1)
		se.stream = name
		stacktest.Eventually(t, 60*time.Second, 200*time.Millisecond, func() bool {
			code, _ := se.get("/readyz")
			return code == http.StatusOK
		}, "worker never became ready once the stream existed; logs:\n%s", logs)
		se.produce(t, 20, 200)
		written += 20
		stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool { return se.output(t).Records >= written },
			"events not processed on the late stream; logs:\n%s", logs)
		if code := stop(); code != exitOK {
			t.Fatalf("exit code %d after SIGTERM; logs:\n%s", code, logs)
		}
	})
}

// startupEnv is a worker environment whose PostgreSQL is behind a stopped proxy: start-up
// never gets past its first step, so no model, stream or lease table is needed.
func startupEnv(t *testing.T) (*systemEnv, []string) {
	t.Helper()
	stacktest.SetAWSEnv(t)
	stacktest.Require(t, "PostgreSQL", "127.0.0.1:5432")
	pgDSN := stacktest.Value(t, "postgres.dsn")
	cc, err := pgx.ParseConfig(pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	proxy := stacktest.NewProxy(t, fmt.Sprintf("%s:%d", cc.Host, cc.Port))
	proxy.Stop()
	name := stacktest.UniqueName("rs-startup-")
	se := &systemEnv{proxy: proxy, stream: name, metrics: freePort(t), outDir: t.TempDir()}
	se.env = append(os.Environ(),
		"RECSTREAM_POSTGRES_PASSWORD="+stacktest.DBPassword("RECSTREAM_POSTGRES_PASSWORD"),
		"RECSTREAM_POSTGRES_DSN="+strings.Replace(pgDSN, fmt.Sprintf("%s:%d", cc.Host, cc.Port), proxy.Addr(), 1),
		"RECSTREAM_KINESIS_STREAM="+name,
		"RECSTREAM_DYNAMODB_LEASE_TABLE="+name,
		"RECSTREAM_S3_BUCKETS_ARTIFACTS=file://"+t.TempDir(),
		"RECSTREAM_S3_BUCKETS_RECOMMENDATIONS=file://"+se.outDir,
		"RECSTREAM_METRICS_LISTEN="+se.metrics,
		"RECSTREAM_WORKER_RETRY_INITIAL_BACKOFF=100ms",
		"RECSTREAM_WORKER_RETRY_MAX_BACKOFF=500ms",
	)
	return se, []string{"--config", "../../config.yaml", "--log-format", "json", "worker"}
}

// worker.start_timeout: a worker that prefers to fail fast exits non-zero, soon after the
// timeout, with a message naming the dependency it waited for.
func TestSystemWorkerStartTimeout(t *testing.T) {
	se, args := startupEnv(t)
	env := append(se.env, "RECSTREAM_WORKER_START_TIMEOUT=2s")
	logs := &syncBuffer{}
	done := make(chan int, 1)
	t0 := time.Now()
	go func() { done <- run(context.Background(), args, env, io.Discard, logs) }()
	var code int
	select {
	case code = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("worker still running 30 s after a 2 s start_timeout; logs:\n%s", logs)
	}
	if d := time.Since(t0); d < 2*time.Second {
		t.Errorf("exited after %s, before start_timeout", d)
	}
	if code == exitOK {
		t.Fatalf("exit code 0 after start_timeout; logs:\n%s", logs)
	}
	if !regexp.MustCompile(`"level":"error".*"msg":"command failed".*postgres still unavailable after worker.start_timeout \(2s, \d+ attempts\)`).MatchString(logs.String()) {
		t.Errorf("the exit does not say which dependency was missing; logs:\n%s", logs)
	}
}

// SIGTERM while start-up waits exits cleanly (code 0) and quickly, well within
// worker.shutdown_timeout.
func TestSystemWorkerSIGTERMDuringStartup(t *testing.T) {
	se, _ := startupEnv(t)
	logs := &syncBuffer{}
	stop := se.startWorker(t, logs)
	se.waitingFor(t, "postgres", logs)
	t0 := time.Now()
	if code := stop(); code != exitOK {
		t.Fatalf("exit code %d after SIGTERM during start-up; logs:\n%s", code, logs)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("SIGTERM during start-up took %s", d)
	}
	if !strings.Contains(logs.String(), "worker stopped during start-up") {
		t.Errorf("no log line for the stop during start-up; logs:\n%s", logs)
	}
}
