package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/icetable/icetabletest"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// fakeRecommender is the ten-line Recommender seam fake: deterministic answers derived from the
// input, an unknown anchor for product codes starting with "UNKNOWN", and optional failures.
type fakeRecommender struct{ fail func() bool }

func (f fakeRecommender) Recommend(_ context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	if f.fail != nil && f.fail() {
		return Recommendations{}, errors.New("fake recommender: database unavailable")
	}
	r := Recommendations{Version: "fake-v1", Similar: map[string][]SimilarItem{}}
	for _, u := range users {
		r.ForUser = append(r.ForUser, []ScoredItem{{ID: "P-" + u.City, Score: u.CreditLimit / 1e5}})
	}
	for _, a := range anchors {
		if !strings.HasPrefix(a, "UNKNOWN") {
			r.Similar[a] = []SimilarItem{{ID: a + "-sim", Distance: 0.5}}
		}
	}
	return r, nil
}

// testEnv is one test's stream, lease table and key prefix on the local stack.
type testEnv struct {
	Stream   string
	Shards   int
	Kinesis  awsenv.KinesisConfig
	DynamoDB awsenv.DynamoDBConfig
	S3       awsenv.S3Config
	Location string // s3://bucket/prefix of the output
	Cfg      Config
	// Ice, when set, makes the workers commit to an Iceberg table (worker.output.table:
	// iceberg) and read reads the table back (icespec) instead of the Hive objects.
	Ice *icetabletest.Env

	kc    *kinesis.Client
	db    *dynamodb.Client
	store objstore.Store
}

func newTestEnv(t testing.TB, shards int) *testEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test needs the local stack (not with -short)")
	}
	stacktest.SetAWSEnv(t)
	e := &testEnv{Stream: stacktest.UniqueName("wt-"), Shards: shards}
	e.Kinesis = awsenv.KinesisConfig{Stream: e.Stream, Shards: shards, Region: "us-east-1", Endpoint: stacktest.Endpoint(t, "kinesis")}
	e.DynamoDB = awsenv.DynamoDBConfig{LeaseTable: e.Stream + "-leases", Region: "us-east-1", Endpoint: stacktest.Endpoint(t, "dynamodb")}
	e.S3 = awsenv.S3Config{Endpoint: stacktest.Endpoint(t, "s3"), Region: "us-east-1", PathStyle: true}
	bucket := strings.TrimPrefix(stacktest.Value(t, "s3.buckets.recommendations"), "s3://")
	e.Location = "s3://" + path.Join(bucket, "test-"+e.Stream)
	e.Cfg = testConfig()
	ctx := context.Background()
	var err error
	if e.kc, err = awsenv.Kinesis(ctx, e.Kinesis); err != nil {
		t.Fatal(err)
	}
	if e.db, err = awsenv.DynamoDB(ctx, e.DynamoDB); err != nil {
		t.Fatal(err)
	}
	e.store = e.openStore(t)
	stacktest.CreateStream(t, e.kc, e.Stream, int32(shards))
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = e.db.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(e.DynamoDB.LeaseTable)})
		if objs, err := e.store.List(ctx, ""); err == nil {
			for _, o := range objs {
				_ = e.store.Delete(ctx, o.Key)
			}
		}
	})
	return e
}

func (e *testEnv) openStore(t testing.TB) objstore.Store {
	c, err := awsenv.S3(context.Background(), e.S3)
	if err != nil {
		t.Fatal(err)
	}
	s, err := objstore.Open(e.Location, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testConfig is tuned for fast tests: 1 s flush age, 3 s failover, 1 s shard sync, 2 s lease
// stealing.
func testConfig() Config {
	c := DefaultConfig()
	c.MaxRecords = 100
	c.FailoverTime = 3 * time.Second
	c.LeaseSafetyMargin = time.Second
	c.ShardSyncInterval = time.Second
	c.LeaseStealingInterval = 2 * time.Second
	c.ShutdownTimeout = 10 * time.Second
	c.Flush = FlushConfig{MaxRecords: 40, MaxBytes: 1 << 20, MaxAge: time.Second}
	c.Retry = RetryConfig{InitialBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
	c.StatusInterval = 0
	return c
}

// event returns a valid event with a unique session id.
func event(i int, run string) []byte {
	b, _ := json.Marshal(map[string]any{
		"session_id": fmt.Sprintf("%s-%06d", run, i), "customer_number": i, "city": "Pasadena", "country": "USA", "credit_limit": 1000 + i,
		"browse_history": []map[string]any{{"product_code": fmt.Sprintf("S%d", i%7), "quantity": "1", "in_shopping_cart": i%2 == 0},
			{"product_code": "UNKNOWN_1", "quantity": 2, "in_shopping_cart": false}},
	})
	return b
}

// put writes records with random partition keys (so they spread over the shards).
func (e *testEnv) put(t testing.TB, recs [][]byte) {
	t.Helper()
	for len(recs) > 0 {
		n := min(len(recs), 200)
		in := &kinesis.PutRecordsInput{StreamName: aws.String(e.Stream)}
		for _, r := range recs[:n] {
			in.Records = append(in.Records, ktypes.PutRecordsRequestEntry{Data: r, PartitionKey: aws.String(fmt.Sprint(rand.Int64()))})
		}
		out, err := e.kc.PutRecords(context.Background(), in)
		if err != nil {
			t.Fatalf("put records: %v", err)
		}
		if aws.ToInt32(out.FailedRecordCount) > 0 {
			t.Fatalf("put records: %d failed", aws.ToInt32(out.FailedRecordCount))
		}
		recs = recs[n:]
	}
}

// output is what the worker wrote: records per session id, and errors/ objects.
type output struct {
	count   map[string]int
	shard   map[string]string // shard id of each record's last copy
	objects int
	errors  []ErrorRecord
}

// read reads every output object back, checking shard order inside each.
func (e *testEnv) read(t testing.TB) output {
	t.Helper()
	ctx := context.Background()
	objs, err := e.store.List(ctx, "")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	out := output{count: map[string]int{}, shard: map[string]string{}}
	if e.Ice != nil {
		out = e.readTable(t)
	}
	for _, o := range objs {
		if e.Ice != nil && !strings.HasPrefix(o.Key, ErrorsPrefix+"/") {
			continue // the table's files: readTable read the live ones
		}
		b, err := objstore.ReadAll(ctx, e.store, o.Key)
		if err != nil {
			t.Fatalf("read %s: %v", o.Key, err)
		}
		if strings.HasPrefix(o.Key, ErrorsPrefix+"/") {
			ers, err := DecodeErrorObject(b)
			if err != nil {
				t.Fatalf("%s: %v", o.Key, err)
			}
			if len(ers) == 0 || !namedAtOrBefore(o.Key, ers[0].ShardID, ers[0].SequenceNumber) {
				t.Fatalf("errors object %s is empty or named after a record later than its first", o.Key)
			}
			out.errors = append(out.errors, ers...)
			continue
		}
		recs, err := DecodeObject(e.Cfg.Format, b)
		if err != nil {
			t.Fatalf("%s: %v", o.Key, err)
		}
		out.objects++
		for i, r := range recs {
			if i == 0 && !namedAtOrBefore(o.Key, r.ShardID, r.SequenceNumber) {
				t.Fatalf("object %s is named after a record later than its first, %s/%s", o.Key, r.ShardID, r.SequenceNumber)
			}
			if prev := recs[max(i-1, 0)]; i > 0 && !seqLess(prev.SequenceNumber, r.SequenceNumber) &&
				!(prev.SequenceNumber == r.SequenceNumber && prev.SubSequenceNumber < r.SubSequenceNumber) {
				t.Fatalf("object %s: sequence %s after %s", o.Key, r.SequenceNumber, recs[i-1].SequenceNumber)
			}
			if !strings.HasPrefix(r.ModelVersion, "fake-v") || len(r.RecommendedItems) != 1 || r.ArrivalTime.IsZero() {
				t.Fatalf("object %s: incomplete record %+v", o.Key, r)
			}
			out.count[r.SessionID]++
			out.shard[r.SessionID] = r.ShardID
		}
	}
	return out
}

// namedAtOrBefore reports whether an object key is named after shard's record seq or an
// earlier one of the same shard (an object is named after the first record its flush took in
// that hour, valid or rejected).
func namedAtOrBefore(key, shard, seq string) bool {
	name := path.Base(key)
	name = name[:strings.IndexByte(name, '.')]
	i := strings.Index(name, "-"+shard+"-")
	if i < 0 {
		return false
	}
	named, _, _ := strings.Cut(name[i+len(shard)+2:], "-") // drop a sub-sequence suffix
	return named == seq || seqLess(named, seq)
}

func seqLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// exactlyOnce checks that sessions run-000000..run-(n-1) each appear exactly once and nothing else.
func exactlyOnce(o output, run string, n int) error {
	if len(o.count) != n {
		return fmt.Errorf("%d distinct records, want %d", len(o.count), n)
	}
	for i := 0; i < n; i++ {
		if c := o.count[fmt.Sprintf("%s-%06d", run, i)]; c != 1 {
			return fmt.Errorf("record %d written %d times", i, c)
		}
	}
	return nil
}

// waitExactlyOnce waits until the output holds every record once, failing on a duplicate.
func (e *testEnv) waitExactlyOnce(t testing.TB, run string, n int, timeout time.Duration) output {
	t.Helper()
	var o output
	stacktest.Eventually(t, timeout, 500*time.Millisecond, func() bool {
		o = e.read(t)
		for id, c := range o.count {
			if c > 1 {
				t.Fatalf("record %s written %d times", id, c)
			}
		}
		return exactlyOnce(o, run, n) == nil
	}, "want %d records exactly once", n)
	return o
}

// newWorker builds an in-process worker with our fenced checkpoint store.
func (e *testEnv) newWorker(t testing.TB, id string, log *zap.Logger, rec Recommender) *Worker {
	t.Helper()
	w, err := e.build(id, log, rec)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (e *testEnv) build(id string, log *zap.Logger, rec Recommender) (*Worker, error) {
	cfg := e.Cfg
	cfg.WorkerID = id
	store, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: id, FailoverTime: cfg.FailoverTime, Logger: log}, e.db)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		rec = fakeRecommender{}
	}
	c, err := awsenv.S3(context.Background(), e.S3)
	if err != nil {
		return nil, err
	}
	st, err := objstore.Open(e.Location, c)
	if err != nil {
		return nil, err
	}
	w, err := New(cfg, Stream{Kinesis: e.Kinesis, DynamoDB: e.DynamoDB},
		Deps{Store: st, Recommender: rec, K: 5, Log: log,
			IsLeaseLost: func(err error) bool { return errors.Is(err, checkpoint.ErrLeaseLost) }}, e.kc, store)
	if err != nil {
		return nil, err
	}
	return w, e.attachTable(w, c)
}

// attachTable makes w commit to the env's Iceberg table, if it has one.
func (e *testEnv) attachTable(w *Worker, c *s3.Client) error {
	if e.Ice == nil {
		return nil
	}
	if err := e.Ice.Connect(c); err != nil {
		return err
	}
	tbl, _, err := e.Ice.Open(context.Background())
	if err != nil {
		return err
	}
	// The committer runs for the rest of the process (a test's or a child's): a worker's
	// drain waits for its last commits.
	go func() { _ = tbl.Run(context.Background()) }()
	w.SetTable(tbl)
	return nil
}

// useIceberg makes the env's workers write to a fresh Iceberg table.
func (e *testEnv) useIceberg(t testing.TB) {
	t.Helper()
	ice := icetabletest.New(t)
	e.Ice = &ice
	e.Cfg.Output.Table = "iceberg"
	e.Cfg.Output.Iceberg = ice.Config
}

// readTable is read for an Iceberg env: the table's live data files at its current snapshot,
// read by icespec (not iceberg-go), and the errors/ objects.
func (e *testEnv) readTable(t testing.TB) output {
	t.Helper()
	out := output{count: map[string]int{}, shard: map[string]string{}}
	snap := e.Ice.ReadTable(t)
	rows := icetabletest.ReadRows[TableRecord](t, *e.Ice, snap)
	out.objects = len(snap.Files)
	for _, tr := range rows {
		r := OutputRecord(tr)
		if !strings.HasPrefix(r.ModelVersion, "fake-v") || len(r.RecommendedItems) != 1 || r.ArrivalTime.IsZero() {
			t.Fatalf("table: incomplete record %+v", r)
		}
		out.count[r.SessionID]++
		out.shard[r.SessionID] = r.ShardID
	}
	return out
}

// connect creates the clients of an env decoded from JSON (child processes).
func (e *testEnv) connect() error {
	var err error
	if e.kc, err = awsenv.Kinesis(context.Background(), e.Kinesis); err != nil {
		return err
	}
	if e.db, err = awsenv.DynamoDB(context.Background(), e.DynamoDB); err != nil {
		return err
	}
	if e.Ice != nil {
		c, err := awsenv.S3(context.Background(), e.S3)
		if err != nil {
			return err
		}
		return e.Ice.Connect(c)
	}
	return nil
}

// running is an in-process worker started by start.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(w *Worker) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	return r
}

func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("worker did not stop within a minute")
		return nil
	}
}

func testLogger(t testing.TB) *zap.Logger {
	if os.Getenv("RECSTREAM_TEST_LOG") != "" {
		return zaptest.NewLogger(t)
	}
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

func TestWorkerExactlyOnce(t *testing.T) {
	e := newTestEnv(t, 2)
	const n = 300
	recs := make([][]byte, n)
	for i := range recs {
		recs[i] = event(i, "r")
	}
	// Two malformed events flow to errors/ while the rest are written.
	e.put(t, recs[:150])
	e.put(t, [][]byte{[]byte(`{"session_id": 1`), []byte(`{"session_id":"x","customer_number":"seven","city":"c","country":"c","credit_limit":1,"browse_history":[]}`)})
	e.put(t, recs[150:])
	r := start(e.newWorker(t, "w1", testLogger(t), nil))
	o := e.waitExactlyOnce(t, "r", n, 90*time.Second)
	stacktest.Eventually(t, 30*time.Second, 500*time.Millisecond, func() bool { return len(e.read(t).errors) == 2 }, "want 2 errors/ objects")
	if err := r.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	reasons := map[Reason]bool{}
	for _, er := range e.read(t).errors {
		reasons[er.Reason] = true
		if er.ShardID == "" || er.SequenceNumber == "" || len(er.PayloadBase64) == 0 {
			t.Fatalf("incomplete error record %+v", er)
		}
	}
	if !reasons[ReasonBadJSON] || !reasons[ReasonInvalidField] {
		t.Fatalf("error reasons %v", reasons)
	}
	if o.objects < 2 {
		t.Fatalf("%d objects, want several (flush.max_records 40)", o.objects)
	}
}
