package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
	"github.com/recstream/recstream/produce"
)

// syncBuffer is a bytes.Buffer safe for the worker's log writes and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// systemEnv is one isolated deployment on the local stack: its own stream, lease table,
// PostgreSQL schema and file:// buckets, with PostgreSQL reached through a proxy that the test
// can cut.
type systemEnv struct {
	env     []string
	proxy   *stacktest.Proxy
	stream  string
	metrics string
	outDir  string
	kc      *kinesis.Client
}

func newSystemEnv(t *testing.T, shards int32) *systemEnv {
	t.Helper()
	stacktest.SetAWSEnv(t)
	ctx := context.Background()
	kinesisEP := stacktest.Endpoint(t, "kinesis")
	dynamoEP := stacktest.Endpoint(t, "dynamodb")
	stacktest.Require(t, "PostgreSQL", "127.0.0.1:5432")

	pgDSN := stacktest.Value(t, "postgres.dsn")
	cc, err := pgx.ParseConfig(pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	proxy := stacktest.NewProxy(t, fmt.Sprintf("%s:%d", cc.Host, cc.Port))
	proxied := strings.Replace(pgDSN, fmt.Sprintf("%s:%d", cc.Host, cc.Port), proxy.Addr(), 1)

	se := &systemEnv{proxy: proxy, stream: stacktest.UniqueName("rs-system-"), metrics: freePort(t), outDir: t.TempDir()}
	schema := strings.ReplaceAll(stacktest.UniqueName("rs_system_"), "-", "_")
	arts := t.TempDir()
	se.env = append(os.Environ(),
		"RECSTREAM_POSTGRES_PASSWORD="+stacktest.DBPassword("RECSTREAM_POSTGRES_PASSWORD"),
		"RECSTREAM_POSTGRES_SCHEMA="+schema,
		"RECSTREAM_KINESIS_STREAM="+se.stream,
		"RECSTREAM_DYNAMODB_LEASE_TABLE="+se.stream,
		"RECSTREAM_S3_BUCKETS_ARTIFACTS=file://"+arts,
		"RECSTREAM_S3_BUCKETS_RECOMMENDATIONS=file://"+se.outDir,
		"RECSTREAM_METRICS_LISTEN="+se.metrics,
		"RECSTREAM_WORKER_FLUSH_MAX_AGE=1s",
		"RECSTREAM_WORKER_RETRY_MAX_BACKOFF=2s",
		"RECSTREAM_WORKER_STATUS_INTERVAL=2s",
	)
	t.Cleanup(func() {
		conn, err := pgx.ConnectConfig(context.Background(), cc.Copy())
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			conn.Close(context.Background())
		}
	})

	// Model: trained on the lab's real training data, published to the file:// artifacts bucket,
	// loaded into this test's schema.
	runCLI(t, se.env, "train", "--csv", stacktest.LabFile(t, "ratings_ml_training_dataset.csv"), "--epochs", "3")
	runCLI(t, se.env, "batch", "embeddings")
	se.env = append(se.env, "RECSTREAM_POSTGRES_DSN="+proxied)

	se.kc, err = awsenv.Kinesis(ctx, awsenv.KinesisConfig{Stream: se.stream, Shards: int(shards), Region: "us-east-1", Endpoint: kinesisEP})
	if err != nil {
		t.Fatal(err)
	}
	stacktest.CreateStream(t, se.kc, se.stream, shards)
	ddb, err := awsenv.DynamoDB(ctx, awsenv.DynamoDBConfig{LeaseTable: se.stream, Region: "us-east-1", Endpoint: dynamoEP})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(se.stream)})
	})
	return se
}

// startWorker runs `recstream worker` in-process; cancelling the returned func is SIGTERM.
func (se *systemEnv) startWorker(t *testing.T, logs io.Writer) (stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config", "../../config.yaml", "--log-format", "json", "worker"}, se.env, io.Discard, logs)
	}()
	stopped := false
	stop = func() int {
		if stopped {
			return exitOK
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			return code
		case <-time.After(40 * time.Second):
			t.Fatal("worker did not stop within 40 s of cancellation")
			return -1
		}
	}
	t.Cleanup(func() { stop() })
	return stop
}

// startReady starts the worker (startWorker) and waits until /readyz answers 200.
func (se *systemEnv) startReady(t *testing.T) (stop func() int, logs *syncBuffer) {
	t.Helper()
	logs = &syncBuffer{}
	stop = se.startWorker(t, logs)
	stacktest.Eventually(t, 60*time.Second, 200*time.Millisecond, func() bool {
		code, _ := se.get("/readyz")
		return code == http.StatusOK
	}, "worker never became ready; logs:\n%s", logs)
	return stop, logs
}

func (se *systemEnv) get(path string) (int, string) {
	resp, err := http.Get("http://" + se.metrics + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (se *systemEnv) produce(t *testing.T, n int, seed uint64) {
	t.Helper()
	cat := produce.Catalog{
		Customers: []produce.Customer{{Number: 103, City: "Nantes", Country: "France", CreditLimit: 21000}, {Number: 112, City: "Las Vegas", Country: "USA", CreditLimit: 71800}, {Number: 141, City: "Madrid", Country: "Spain", CreditLimit: 227600}, {Number: 124, City: "San Rafael", Country: "USA", CreditLimit: 210500}},
		Products:  []string{"S10_1678", "S10_1949", "S12_1099", "S18_1589", "S24_2000", "S50_1514", "S700_2834"},
	}
	g, err := produce.NewGenerator(produce.GenConfig{Seed: seed, UnseenRatio: 0.2}, cat)
	if err != nil {
		t.Fatal(err)
	}
	p, err := produce.New(produce.Config{Stream: se.stream, Rate: 500, Count: n}, g, se.kc, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Run(context.Background())
	if err != nil || st.Sent != n {
		t.Fatalf("produce: sent %d of %d: %v", st.Sent, n, err)
	}
}

func (se *systemEnv) output(t *testing.T) InspectReport {
	t.Helper()
	store, err := objstore.Open("file://"+se.outDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := inspect(context.Background(), store, "parquet", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func metricValue(body, series string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestSystemPostgresOutage is the operator's scenario from the produce/status/metrics issue:
// a live worker with real Kinesis, DynamoDB, PostgreSQL + pgvector and a trained model;
// /metrics carries the per-shard series, `status` shows every shard with an owner and a
// checkpoint, and PostgreSQL disappearing for 20 s loses and duplicates nothing: /readyz goes
// red and back, the outage shows in logs and metrics, processing resumes by itself.
func TestSystemPostgresOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("system test skipped with -short (CI runs it)")
	}
	se := newSystemEnv(t, 2)
	stop, logs := se.startReady(t)

	const n1, n2 = 60, 60
	se.produce(t, n1, 1)
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool { return se.output(t).Records >= n1 },
		"first %d records not written; logs:\n%s", n1, logs)

	// status against the live run: every shard has an owner and a checkpoint.
	stacktest.Eventually(t, 30*time.Second, 500*time.Millisecond, func() bool {
		var out, errb bytes.Buffer
		if run(context.Background(), []string{"--config", "../../config.yaml", "status", "--json"}, se.env, &out, &errb) != exitOK {
			return false
		}
		var rep StatusReport
		if json.Unmarshal(out.Bytes(), &rep) != nil || len(rep.Shards) != 2 {
			return false
		}
		for _, s := range rep.Shards {
			if s.Owner == "" || s.Checkpoint == "" || !s.InLeaseTable {
				return false
			}
		}
		return rep.ModelVersion != "" && rep.ModelVersion == rep.EmbeddingsVersion
	}, "status never showed both shards owned and checkpointed with the live versions")

	// The named series, labelled by shard.
	_, body := se.get("/metrics")
	for _, s := range []string{
		`recstream_worker_records_in_total{shard_id="shardId-000000000000"}`,
		`recstream_worker_records_out_total{shard_id="shardId-000000000001"}`,
		`recstream_worker_millis_behind_latest{shard_id="shardId-000000000000"}`,
		`recstream_worker_last_checkpoint_timestamp_seconds{shard_id="shardId-000000000001"}`,
		`recstream_worker_flush_objects_total{shard_id="shardId-000000000000"}`,
		`recstream_worker_leases_held`,
		`recstream_worker_vector_query_seconds_count`,
	} {
		if _, ok := metricValue(body, s); !ok {
			t.Errorf("/metrics lacks %s", s)
		}
	}
	if t.Failed() {
		t.Fatalf("/metrics:\n%s", body)
	}
	in0, _ := metricValue(body, `recstream_worker_records_in_total{shard_id="shardId-000000000000"}`)
	in1, _ := metricValue(body, `recstream_worker_records_in_total{shard_id="shardId-000000000001"}`)
	if int(in0+in1) != n1 {
		t.Errorf("records_in over both shards = %v, want %d", in0+in1, n1)
	}

	// Outage: PostgreSQL unreachable for 20 s while events keep arriving.
	se.proxy.Stop()
	outageStart := time.Now()
	stacktest.Eventually(t, 15*time.Second, 200*time.Millisecond, func() bool {
		code, _ := se.get("/readyz")
		return code == http.StatusServiceUnavailable
	}, "/readyz stayed green with PostgreSQL down")
	if _, body := se.get("/readyz"); !strings.Contains(body, `"dynamodb":"ok"`) || !strings.Contains(body, `"model":"ok"`) || strings.Contains(body, `"postgres":"ok"`) {
		t.Errorf("/readyz during the outage: %s", body)
	}
	se.produce(t, n2, 2)
	// The outage lasts 20 s by design (the scenario), not as a wait for a condition.
	time.Sleep(time.Until(outageStart.Add(20 * time.Second)))
	if got := se.output(t).Records; got != n1 {
		t.Fatalf("%d records written during the outage, want %d (nothing can be enriched without PostgreSQL)", got, n1)
	}
	se.proxy.Start()

	stacktest.Eventually(t, 90*time.Second, 250*time.Millisecond, func() bool { return se.output(t).Records >= n1+n2 },
		"processing did not resume after the outage; logs:\n%s", logs)
	stacktest.Eventually(t, 30*time.Second, 200*time.Millisecond, func() bool {
		code, _ := se.get("/readyz")
		return code == http.StatusOK
	}, "/readyz did not recover")
	_, body = se.get("/metrics")
	retries := 0.0
	for _, sh := range []string{"shardId-000000000000", "shardId-000000000001"} {
		v, _ := metricValue(body, `recstream_worker_retries_total{op="recommend",shard_id="`+sh+`"}`)
		retries += v
	}
	if retries == 0 {
		t.Errorf("no recommend retries in /metrics after the outage:\n%s", body)
	}
	if !strings.Contains(logs.String(), `"level":"warn"`) {
		t.Errorf("the outage left no warning in the logs")
	}

	if code := stop(); code != exitOK {
		t.Fatalf("worker exit code %d after SIGTERM; logs:\n%s", code, logs)
	}
	rep := se.output(t)
	if rep.Records != n1+n2 || rep.Duplicates != 0 || rep.Unique != n1+n2 {
		t.Fatalf("after the outage: %d records, %d duplicates, %d unique sessions; want %d, 0, %d", rep.Records, rep.Duplicates, rep.Unique, n1+n2, n1+n2)
	}
	for v, n := range rep.Versions {
		if v == "" || n != n1+n2 {
			t.Fatalf("model versions in output: %v", rep.Versions)
		}
	}
}
