// Package stacktest gives integration tests the local stack's endpoints and fails or skips
// when a service is unreachable: under CI=true a missing service is a test failure, locally
// the test skips with a message saying how to start the stack.
//
// Endpoints come from RECSTREAM_* variables, defaulting to the values in the repository's
// config.yaml, so tests and jobs talk to the same services.
package stacktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"gopkg.in/yaml.v3"
)

// Local stack credentials (scripts/stack.sh creates them). Never used outside tests.
const (
	LocalAccessKey = "recstream"
	LocalSecretKey = "recstream-local-secret"
	LocalDBPass    = "recstream"
)

var (
	loadOnce sync.Once
	values   map[string]string
	loadErr  error
)

// RepoRoot is the directory holding go.mod.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// ClassicModels is testdata/classicmodels in the repository: the real public classicmodels
// tables and the lab's ratings as CSV (see testdata/README.md). A checkout always carries it;
// a test fails when it is missing rather than skipping, since that is a broken checkout.
func ClassicModels(t testing.TB) string {
	t.Helper()
	return testdataDir(t, "classicmodels")
}

// LabFile is the path of one of the lab's real outputs in testdata/lab (for example
// "ratings_ml_training_dataset.csv" or "example_record.json").
func LabFile(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(testdataDir(t, "lab"), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("testdata/lab/%s: %v", name, err)
	}
	return p
}

func testdataDir(t testing.TB, sub string) string {
	t.Helper()
	d := filepath.Join(RepoRoot(), "testdata", sub)
	if st, err := os.Stat(d); err != nil || !st.IsDir() {
		t.Fatalf("testdata/%s is missing from the checkout: %v", sub, err)
	}
	return d
}

func load() {
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "config.yaml"))
	if err != nil {
		loadErr = err
		return
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		loadErr = err
		return
	}
	values = map[string]string{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			if sub, ok := v.(map[string]any); ok {
				walk(p, sub)
				continue
			}
			if v != nil {
				values[p] = fmt.Sprint(v)
			}
		}
	}
	walk("", doc)
}

// Value returns a config key as the jobs would see it: RECSTREAM_<KEY> if set, else config.yaml.
func Value(t testing.TB, key string) string {
	t.Helper()
	if v, ok := os.LookupEnv("RECSTREAM_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))); ok {
		return v
	}
	loadOnce.Do(load)
	if loadErr != nil {
		t.Fatalf("read config.yaml: %v", loadErr)
	}
	return values[key]
}

// SetAWSEnv points the AWS credential chain at the local stack's keys unless the environment
// already has credentials. Call it before building any AWS client in a test.
func SetAWSEnv(t testing.TB) {
	t.Helper()
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		t.Setenv("AWS_ACCESS_KEY_ID", LocalAccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", LocalSecretKey)
	}
	if os.Getenv("AWS_REGION") == "" {
		t.Setenv("AWS_REGION", "us-east-1")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// DBPassword is the local stack's database password unless the environment sets one.
func DBPassword(envKey string) string {
	if v := os.Getenv(envKey); v != "" {
		return v
	}
	return LocalDBPass
}

// Require checks that host:port (or an http URL's host) answers within 2 s; otherwise it fails
// the test under CI=true and skips it locally.
func Require(t testing.TB, service, addr string) {
	t.Helper()
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		unavailable(t, fmt.Sprintf("%s at %s is unreachable (%v)", service, addr, err))
		return
	}
	conn.Close()
}

func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; under CI=true a missing service is a failure", why)
	}
	t.Skipf("%s; start the local stack with `scripts/stack.sh up` (or run `make test`)", why)
}

// MySQLAddr returns host:port of config mysql.dsn, after Require.
func MySQLAddr(t testing.TB) string {
	t.Helper()
	dsn := Value(t, "mysql.dsn")
	addr := "127.0.0.1:3306"
	if i := strings.Index(dsn, "tcp("); i >= 0 {
		if j := strings.Index(dsn[i:], ")"); j > 0 {
			addr = dsn[i+4 : i+j]
		}
	}
	Require(t, "MariaDB", addr)
	return addr
}

// Endpoint returns config key <section>.endpoint after checking that it answers.
func Endpoint(t testing.TB, section string) string {
	t.Helper()
	e := Value(t, section+".endpoint")
	Require(t, section, e)
	return e
}

// UniqueName returns prefix + 8 random hex characters, lower case, for a per-test stream,
// table, schema, database or key prefix.
func UniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Eventually polls cond every interval until it returns true or the deadline passes, then fails
// with msg. Tests wait on conditions with deadlines, never on fixed sleeps.
func Eventually(t testing.TB, timeout, interval time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if cond() {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after %s: "+msg, append([]any{timeout}, args...)...)
		case <-tick.C:
		}
	}
}

// CreateStream creates a Kinesis stream of shards shards on the local stack, deleted in
// Cleanup, and waits until it is ACTIVE. kinesalite caps the open shards of all streams
// together (--shardLimit), which the tests of packages running at the same time share: a
// refusal for that limit is waited out (up to four minutes), never a failure.
func CreateStream(t testing.TB, kc *kinesis.Client, name string, shards int32) {
	t.Helper()
	ctx := context.Background()
	var createErr error
	Eventually(t, 4*time.Minute, 500*time.Millisecond, func() bool {
		_, createErr = kc.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(shards)})
		var limit *ktypes.LimitExceededException
		if createErr != nil && !errors.As(createErr, &limit) {
			t.Fatalf("create stream %s: %v", name, createErr)
		}
		return createErr == nil
	}, "no room in kinesalite for a stream of %d shards", shards)
	t.Cleanup(func() {
		_, _ = kc.DeleteStream(context.Background(), &kinesis.DeleteStreamInput{StreamName: aws.String(name)})
	})
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		out, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		return err == nil && out.StreamDescriptionSummary.StreamStatus == ktypes.StreamStatusActive
	}, "stream %s not ACTIVE", name)
}
