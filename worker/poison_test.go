package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"

	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// poisonRecommender fails deterministically for any call that includes a user from the city
// "POISON" (as pgvector refuses a NaN embedding for that user alone); rejectAll makes it
// refuse every input, as a broken artifact would. Calls are counted.
type poisonRecommender struct {
	rejectAll atomic.Bool
	calls     atomic.Int64
}

func (r *poisonRecommender) Recommend(ctx context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	r.calls.Add(1)
	if r.rejectAll.Load() {
		return Recommendations{}, fmt.Errorf("%w: different vector dimensions 16 and 32", ErrDeterministic)
	}
	for _, u := range users {
		if u.City == "POISON" {
			return Recommendations{}, fmt.Errorf("%w: NaN not allowed in vector", ErrDeterministic)
		}
	}
	return fakeRecommender{}.Recommend(ctx, users, anchors, k)
}

// lastCheckpointer records the last checkpoint written.
type lastCheckpointer struct {
	mu   sync.Mutex
	last string
}

func (c *lastCheckpointer) Checkpoint(seq *string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = aws.ToString(seq)
	return nil
}

func (c *lastCheckpointer) PrepareCheckpoint(*string) (kcl.IPreparedCheckpointer, error) {
	return nil, errors.New("not used")
}

func (c *lastCheckpointer) get() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// seamEnv drives one processor directly (no Kinesis, no lease table) writing to store.
type seamEnv struct {
	s        *shared
	p        *processor
	metrics  *Metrics
	reg      *prometheus.Registry
	cp       *lastCheckpointer
	seq      int
	abandon  context.CancelFunc
	stopping *atomic.Bool
}

func newSeamEnv(t *testing.T, cfg Config, store objstore.Store, rec Recommender) *seamEnv {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, abandon := context.WithCancel(context.Background())
	t.Cleanup(abandon)
	var stopping atomic.Bool
	s := &shared{cfg: cfg, stream: "poison", lease: alwaysHeld{}, ctx: ctx, stopping: &stopping, live: map[string]*processor{},
		deps: Deps{Store: store, Recommender: rec, K: 1, Log: testLogger(t), Metrics: metrics}}
	p := s.CreateProcessor().(*processor)
	p.Initialize(&kcl.InitializationInput{ShardId: "shardId-000000000001", ExtendedSequenceNumber: &kcl.ExtendedSequenceNumber{SequenceNumber: aws.String("1000")}})
	return &seamEnv{s: s, p: p, metrics: metrics, reg: reg, cp: &lastCheckpointer{}, seq: 1000, abandon: abandon, stopping: &stopping}
}

// records turns payloads into a batch with increasing sequence numbers, arriving now.
func (e *seamEnv) records(payloads ...[]byte) []ktypes.Record {
	now := time.Now()
	out := make([]ktypes.Record, len(payloads))
	for i, b := range payloads {
		e.seq++
		out[i] = ktypes.Record{Data: b, SequenceNumber: aws.String(fmt.Sprint(e.seq)), PartitionKey: aws.String("pk"), ApproximateArrivalTimestamp: &now}
	}
	return out
}

func (e *seamEnv) process(recs []ktypes.Record) {
	e.p.ProcessRecords(&kcl.ProcessRecordsInput{Records: recs, Checkpointer: e.cp})
}

// poisonEvent is a valid event whose user the poisonRecommender refuses.
func poisonEvent(i int, run string) []byte {
	return []byte(strings.Replace(string(event(i, run)), `"city":"Pasadena"`, `"city":"POISON"`, 1))
}

// readAll returns every output record and every errors/ record under store.
func readAll(t *testing.T, store objstore.Store) (recs []OutputRecord, errs []ErrorRecord, errObjects int) {
	t.Helper()
	ctx := context.Background()
	objs, err := store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		b, err := objstore.ReadAll(ctx, store, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(o.Key, ErrorsPrefix+"/") {
			ers, err := DecodeErrorObject(b)
			if err != nil {
				t.Fatalf("%s: %v", o.Key, err)
			}
			errObjects++
			errs = append(errs, ers...)
			continue
		}
		rs, err := DecodeObject("parquet", b)
		if err != nil {
			t.Fatalf("%s: %v", o.Key, err)
		}
		recs = append(recs, rs...)
	}
	return recs, errs, errObjects
}

// TestPoisonRecordIsolated: a record the recommender can never answer (a deterministic
// failure for that record alone) goes to errors/ as recommend_failed with the error text; the
// rest of its batch is written once and the checkpoint moves past it. Real S3 gateway.
func TestPoisonRecordIsolated(t *testing.T) {
	store := stacktest.S3Store(t, "recommendations", "poison-")
	rec := &poisonRecommender{}
	cfg := testConfig()
	cfg.Flush = FlushConfig{MaxRecords: 1000, MaxBytes: 1 << 20, MaxAge: time.Hour}
	e := newSeamEnv(t, cfg, store, rec)
	var payloads [][]byte
	const n = 64
	for i := range n {
		if i == 5 || i == 40 {
			payloads = append(payloads, poisonEvent(i, "p"))
			continue
		}
		payloads = append(payloads, event(i, "p"))
	}
	payloads = append(payloads, []byte(`{"session_id": 1`)) // and a malformed one
	batch := e.records(payloads...)
	e.process(batch)
	if e.p.buf.n != n+1 {
		t.Fatalf("buffered %d records, want %d", e.p.buf.n, n+1)
	}
	if !e.p.flush(e.cp) {
		t.Fatal("flush failed")
	}
	if got, want := e.cp.get(), aws.ToString(batch[len(batch)-1].SequenceNumber); got != want {
		t.Fatalf("checkpoint %s, want %s (past the poison records)", got, want)
	}
	recs, errs, errObjects := readAll(t, store)
	if len(recs) != n-2 {
		t.Fatalf("%d records written, want %d", len(recs), n-2)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[r.SessionID] || r.City == "POISON" {
			t.Fatalf("record %s written twice or poison written", r.SessionID)
		}
		seen[r.SessionID] = true
	}
	if len(errs) != 3 || errObjects != 1 {
		t.Fatalf("errors/: %d records in %d objects, want 3 in 1: %+v", len(errs), errObjects, errs)
	}
	byReason := map[Reason][]ErrorRecord{}
	for _, er := range errs {
		byReason[er.Reason] = append(byReason[er.Reason], er)
	}
	rf := byReason[ReasonRecommendFailed]
	if len(rf) != 2 || len(byReason[ReasonBadJSON]) != 1 {
		t.Fatalf("reasons %v", byReason)
	}
	for _, er := range rf {
		if !strings.Contains(er.Message, "NaN not allowed in vector") || !strings.Contains(string(er.PayloadBase64), `"POISON"`) ||
			er.ShardID == "" || er.SequenceNumber == "" || er.PartitionKey != "pk" || er.ArrivalTime.IsZero() {
			t.Fatalf("incomplete recommend_failed record %+v", er)
		}
	}
	// Bisection, not one call per record: 64 records with 2 bad ones need a few dozen calls.
	if c := rec.calls.Load(); c > 40 {
		t.Fatalf("%d recommender calls for one batch of %d", c, n)
	}
	if v := testutil.ToFloat64(e.metrics.RecordsFailed.WithLabelValues(e.p.shard, string(ReasonRecommendFailed))); v != 2 {
		t.Fatalf("records_failed_total{reason=recommend_failed} = %v, want 2", v)
	}
}

// TestRecommenderRejectingEverythingIsNotPoison: when the recommender refuses even a neutral
// probe (a broken artifact), no record is blamed: nothing goes to errors/, the shard waits and
// shows as stalled (gauge, Health naming the shard, growing lag), and once the recommender
// recovers every record is written and the stall clears.
func TestRecommenderRejectingEverythingIsNotPoison(t *testing.T) {
	store := stacktest.S3Store(t, "recommendations", "poison-all-")
	rec := &poisonRecommender{}
	rec.rejectAll.Store(true)
	cfg := testConfig()
	cfg.Flush = FlushConfig{MaxRecords: 1000, MaxBytes: 1 << 20, MaxAge: time.Second}
	cfg.StallAfter = 2 * time.Second
	e := newSeamEnv(t, cfg, store, rec)
	payloads := make([][]byte, 10)
	for i := range payloads {
		payloads[i] = event(i, "a")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.process(e.records(payloads...))
	}()
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		err := e.s.health(time.Now())
		return err != nil && strings.Contains(err.Error(), "shard "+e.p.shard+" stalled")
	}, "health never reported the stalled shard")
	if v := testutil.ToFloat64(e.metrics.ShardStalled.WithLabelValues(e.p.shard)); v != 1 {
		t.Fatalf("shard_stalled = %v, want 1", v)
	}
	age1 := testutil.ToFloat64(e.metrics.CheckpointAge.WithLabelValues(e.p.shard))
	lag1 := testutil.ToFloat64(e.metrics.MillisBehind.WithLabelValues(e.p.shard))
	stacktest.Eventually(t, 10*time.Second, 100*time.Millisecond, func() bool {
		e.s.observe(time.Now())
		return testutil.ToFloat64(e.metrics.CheckpointAge.WithLabelValues(e.p.shard)) > age1+0.5 &&
			testutil.ToFloat64(e.metrics.MillisBehind.WithLabelValues(e.p.shard)) > lag1+500
	}, "checkpoint age and lag did not grow while stuck")
	if _, errs, _ := readAll(t, store); len(errs) != 0 {
		t.Fatalf("records blamed for a recommender that rejects everything: %+v", errs)
	}
	rec.rejectAll.Store(false)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("processor still stuck after the recommender recovered")
	}
	// Age flush on the next (empty) call, as the library makes for an idle shard.
	stacktest.Eventually(t, 10*time.Second, 200*time.Millisecond, func() bool {
		e.process(nil)
		return e.p.buf.empty()
	}, "buffer never flushed")
	recs, errs, _ := readAll(t, store)
	if len(recs) != 10 || len(errs) != 0 {
		t.Fatalf("%d records, %d errors after recovery; want 10, 0", len(recs), len(errs))
	}
	if err := e.s.health(time.Now()); err != nil {
		t.Fatalf("health after recovery: %v", err)
	}
	if v := testutil.ToFloat64(e.metrics.ShardStalled.WithLabelValues(e.p.shard)); v != 0 {
		t.Fatalf("shard_stalled = %v after recovery", v)
	}
}

// TestPermanentStorageErrorIsVisible: a write refused with NoSuchBucket (real S3 gateway) is
// not retried silently: Health names the bucket and the code, the counter moves, and once the
// bucket exists the batch is written and Health clears.
func TestPermanentStorageErrorIsVisible(t *testing.T) {
	stacktest.SetAWSEnv(t)
	client := stacktest.S3Client(t)
	bucket := stacktest.UniqueName("rs-missing-")
	store, err := objstore.Open("s3://"+bucket+"/out", client)
	if err != nil {
		t.Fatal(err)
	}
	e := newSeamEnv(t, testConfig(), store, fakeRecommender{})
	e.process(e.records(event(1, "b"), event(2, "b")))
	done := make(chan bool)
	go func() { done <- e.p.flush(e.cp) }()
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		err := e.s.health(time.Now())
		return err != nil && strings.Contains(err.Error(), "NoSuchBucket") && strings.Contains(err.Error(), bucket)
	}, "health never named the missing bucket")
	if v := testutil.ToFloat64(e.metrics.StoragePermanentErrors.WithLabelValues(bucket, "NoSuchBucket")); v < 1 {
		t.Fatalf("storage_permanent_errors_total = %v", v)
	}
	stacktest.CreateBucket(t, client, bucket)
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("flush gave up")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("flush still retrying after the bucket was created")
	}
	if err := e.s.health(time.Now()); err != nil {
		t.Fatalf("health after the bucket exists: %v", err)
	}
	if recs, _, _ := readAll(t, store); len(recs) != 2 {
		t.Fatalf("%d records written, want 2", len(recs))
	}
}

// TestUnknownFieldsCountedAndCapped: with unknown_fields: ignore the event is written and each
// dropped field is counted by name, up to maxUnknownFieldLabels names; the rest fold into
// "other". With reject the event goes to errors/.
func TestUnknownFieldsCountedAndCapped(t *testing.T) {
	dir, err := objstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newSeamEnv(t, testConfig(), dir, fakeRecommender{})
	var payloads [][]byte
	for i := range maxUnknownFieldLabels + 10 {
		payloads = append(payloads, []byte(strings.Replace(string(event(i, "u")), `{`, fmt.Sprintf(`{"extra_%02d":1,"coupon":"X",`, i), 1)))
	}
	e.process(e.records(payloads...))
	if !e.p.flush(e.cp) {
		t.Fatal("flush failed")
	}
	recs, errs, _ := readAll(t, dir)
	if len(recs) != len(payloads) || len(errs) != 0 {
		t.Fatalf("%d records, %d errors; want %d, 0", len(recs), len(errs), len(payloads))
	}
	if v := testutil.ToFloat64(e.metrics.UnknownFields.WithLabelValues("coupon")); v != float64(len(payloads)) {
		t.Fatalf("unknown_fields_total{field=coupon} = %v", v)
	}
	if n := testutil.CollectAndCount(e.metrics.UnknownFields); n != maxUnknownFieldLabels+1 {
		t.Fatalf("%d unknown_fields series, want %d (capped names + other)", n, maxUnknownFieldLabels+1)
	}
	if v := testutil.ToFloat64(e.metrics.UnknownFields.WithLabelValues("other")); v != 11 {
		t.Fatalf("unknown_fields_total{field=other} = %v, want 11", v)
	}

	cfg := testConfig()
	cfg.UnknownFields = "reject"
	dir2, _ := objstore.Open(t.TempDir(), nil)
	e2 := newSeamEnv(t, cfg, dir2, fakeRecommender{})
	e2.process(e2.records(payloads[0], event(99, "u")))
	if !e2.p.flush(e2.cp) {
		t.Fatal("flush failed")
	}
	recs, errs, _ = readAll(t, dir2)
	if len(recs) != 1 || len(errs) != 1 || errs[0].Reason != ReasonUnknownField {
		t.Fatalf("reject: %d records, errors %+v", len(recs), errs)
	}
}

// TestShardSeriesDeletedOnRelease: when a shard's processor ends (lease lost, handed over),
// its per-shard gauges disappear so a stale value cannot fire an alert.
func TestShardSeriesDeletedOnRelease(t *testing.T) {
	dir, _ := objstore.Open(t.TempDir(), nil)
	e := newSeamEnv(t, testConfig(), dir, fakeRecommender{})
	e.process(e.records(event(1, "d")))
	e.s.observe(time.Now())
	for _, g := range []*prometheus.GaugeVec{e.metrics.MillisBehind, e.metrics.CheckpointAge, e.metrics.ShardStalled} {
		if n := testutil.CollectAndCount(g); n != 1 {
			t.Fatalf("%d series before release, want 1", n)
		}
	}
	e.s.forget(e.p.shard)
	for _, g := range []*prometheus.GaugeVec{e.metrics.MillisBehind, e.metrics.CheckpointAge, e.metrics.ShardStalled, e.metrics.LastCheckpointTS} {
		if n := testutil.CollectAndCount(g); n != 0 {
			t.Fatalf("%d series left after release", n)
		}
	}
}

// slidingLease is a lease renewed all the time: it is always held for another 1.5 s.
type slidingLease struct{}

func (slidingLease) HeldUntil(string) (time.Time, bool) {
	return time.Now().Add(1500 * time.Millisecond), true
}

// slowStore takes d for every Put, honouring the context, and counts the calls.
type slowStore struct {
	objstore.Store
	d     time.Duration
	calls atomic.Int64
}

func (s *slowStore) Put(ctx context.Context, key string, body io.Reader) error {
	s.calls.Add(1)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(s.d):
	}
	return s.Store.Put(ctx, key, body)
}

// TestUploadDeadlineFollowsRenewals: an upload slower than the lease time left when it starts
// (minus the safety margin) completes while renewals keep the lease: its deadline moves with
// the lease instead of being fixed at the attempt's start.
func TestUploadDeadlineFollowsRenewals(t *testing.T) {
	dir, _ := objstore.Open(t.TempDir(), nil)
	store := &slowStore{Store: dir, d: 1200 * time.Millisecond}
	cfg := testConfig() // lease_safety_margin 1 s: a fixed deadline would end 0.5 s into the upload
	e := newSeamEnv(t, cfg, store, fakeRecommender{})
	e.s.lease = slidingLease{}
	e.process(e.records(event(1, "l")))
	done := make(chan bool, 1)
	go func() { done <- e.p.flush(e.cp) }()
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("flush failed")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("upload never completed: its deadline does not follow the renewed lease")
	}
	if c := store.calls.Load(); c != 1 {
		t.Fatalf("%d upload attempts, want 1", c)
	}
}
