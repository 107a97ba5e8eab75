package worker

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/stacktest"
)

const firstShard = "shardId-000000000000"

// events returns valid events from..from+n-1 of run.
func events(run string, from, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = event(from+i, run)
	}
	return out
}

// putInOneWindow puts recs in one PutRecords call just after a whole second of the local clock
// (which the local Kinesis stamps arrival times with), so with flush.max_age 1s they all arrive
// in one flush window, and each call in a later window than the previous one. This shapes the
// data; nothing waits on it.
func putInOneWindow(t *testing.T, e *testEnv, recs [][]byte) {
	t.Helper()
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second + 50*time.Millisecond).Sub(now))
	e.put(t, recs)
}

// readShard reads a shard from TRIM_HORIZON until it has n records (with the same client and
// view of aggregates as a replay).
func readShard(t *testing.T, e *testEnv, shardID string, n int) []ktypes.Record {
	t.Helper()
	ctx := context.Background()
	kc := withHiddenAggregates(e.kc)
	it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(e.Stream), ShardId: aws.String(shardID),
		ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon})
	if err != nil {
		t.Fatal(err)
	}
	iter := it.ShardIterator
	var out []ktypes.Record
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		page, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page.Records...)
		iter = page.NextShardIterator
		return len(out) >= n
	}, "want %d records in %s", n, shardID)
	if len(out) != n {
		t.Fatalf("%d records in %s, want %d", len(out), shardID, n)
	}
	return out
}

// tipDriver is a live worker's processor of one shard, driven as the library drives it with
// records read from the real stream, writing to the real object store, on a clock the test
// moves: the test decides when the worker is idle at the stream's tip, and so which records
// arrive after their window was closed.
type tipDriver struct {
	p       *processor
	cp      *lastCheckpointer
	metrics *Metrics
	mu      sync.Mutex
	now     time.Time
}

func newTipDriver(t *testing.T, e *testEnv, shardID string, rec Recommender) *tipDriver {
	t.Helper()
	d := &tipDriver{cp: &lastCheckpointer{}, now: time.Now()}
	d.metrics, _ = NewMetrics(nil)
	var stopping atomic.Bool
	s := &shared{cfg: e.Cfg, stream: e.Stream, lease: alwaysHeld{}, ctx: context.Background(), stopping: &stopping, live: map[string]*processor{},
		deps: Deps{Store: e.store, Recommender: rec, K: 5, Log: testLogger(t), Metrics: d.metrics, Now: d.clock}}
	d.p = s.CreateProcessor().(*processor)
	d.p.Initialize(&kcl.InitializationInput{ShardId: shardID, ExtendedSequenceNumber: &kcl.ExtendedSequenceNumber{}})
	return d
}

func (d *tipDriver) clock() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now
}

// take hands the processor a batch read behind the tip.
func (d *tipDriver) take(t *testing.T, recs []ktypes.Record) {
	t.Helper()
	d.p.ProcessRecords(&kcl.ProcessRecordsInput{Records: recs, Checkpointer: d.cp, MillisBehindLatest: 1000})
	if d.p.state != stateActive {
		t.Fatal("live processor stopped")
	}
}

// idleAtTip is an empty read at the tip once the buffer's window and its grace are over: the
// live worker closes the window there.
func (d *tipDriver) idleAtTip(t *testing.T) {
	t.Helper()
	d.mu.Lock()
	d.now = d.p.buf.windowEnd().Add(d.p.s.cfg.Flush.WindowGrace + time.Millisecond)
	d.mu.Unlock()
	d.p.ProcessRecords(&kcl.ProcessRecordsInput{Checkpointer: d.cp, MillisBehindLatest: 0})
	if !d.p.buf.empty() || d.p.state != stateActive {
		t.Fatal("no flush at the tip")
	}
}

// fence is the live checkpoint the driver's flushes wrote.
func (d *tipDriver) fence(context.Context, string) (string, error) { return d.cp.get(), nil }

func windowsOf(recs []ktypes.Record, maxAge time.Duration) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = aws.ToTime(r.ApproximateArrivalTimestamp).UnixNano() / int64(maxAge)
	}
	return out
}

// errorCount counts every errors/ record by sequence number.
func errorCount(o output) map[string]int {
	m := map[string]int{}
	for _, e := range o.errors {
		m[fmt.Sprintf("%s/%d", e.SequenceNumber, e.SubSequenceNumber)]++
	}
	return m
}

// TestReplayCutsWhereTheLiveWorkerCut pins a replay that stored records twice: the live
// worker closes a window at the stream's tip (its clock past the window's end + window_grace),
// and records of that window readable only afterwards (slow propagation, clock skew) are
// written in an object of their own; the replay, cutting only at window boundaries, wrote them
// into the window's object too and left the late object in place. The replay now cuts before
// every record that starts a stored object, so it rewrites exactly the live keys, byte for
// byte; the live side counts the late records.
func TestReplayCutsWhereTheLiveWorkerCut(t *testing.T) {
	e := newTestEnv(t, 1)
	e.Cfg.Flush = FlushConfig{MaxRecords: 100, MaxBytes: 1 << 20, MaxAge: time.Second, WindowGrace: 500 * time.Millisecond}
	putInOneWindow(t, e, events("l", 0, 5))
	putInOneWindow(t, e, append(events("l", 5, 2), malformedEvent(100, "l"), []byte(`{"session_id":`)))
	putInOneWindow(t, e, events("l", 7, 2))
	recs := readShard(t, e, firstShard, 11)
	w := windowsOf(recs, e.Cfg.Flush.MaxAge)
	if !(w[0] == w[4] && w[4] < w[5] && w[5] == w[8] && w[8] < w[9] && w[9] == w[10]) {
		t.Fatalf("want three batches in three windows, got windows %v", w)
	}

	live := newTipDriver(t, e, firstShard, fakeRecommender{})
	live.take(t, recs[0:2])
	live.idleAtTip(t)
	live.take(t, recs[2:5]) // late: their window is closed
	live.take(t, recs[5:7]) // a later window: the late records' object is cut
	live.idleAtTip(t)
	live.take(t, recs[7:9]) // late and all rejected: an errors/ object of their own
	live.take(t, recs[9:11])
	live.idleAtTip(t)
	if got := testutil.ToFloat64(live.metrics.LateRecords); got != 5 {
		t.Fatalf("late_records_total = %v, want 5", got)
	}
	before := snapshot(t, e.store)
	if o := e.read(t); exactlyOnce(o, "l", 9) != nil || len(errorCount(o)) != 2 {
		t.Fatalf("live output: %v, %d error records", exactlyOnce(o, "l", 9), len(o.errors))
	}
	// A, late A, B, late B (errors/ only), C.
	if len(before) != 5 {
		t.Fatalf("live run wrote %d objects, want 5", len(before))
	}

	res, err := Replay(context.Background(), e.Cfg, e.Stream, Deps{Store: e.store, Recommender: fakeRecommender{}, K: 5, Log: testLogger(t)},
		e.kc, live.fence, ReplayRequest{From: aws.ToTime(recs[0].ApproximateArrivalTimestamp)})
	if err != nil {
		t.Fatal(err)
	}
	o := e.read(t)
	if err := exactlyOnce(o, "l", 9); err != nil {
		t.Fatalf("after the replay: %v", err)
	}
	for seq, n := range errorCount(o) {
		if n != 1 {
			t.Fatalf("rejected record %s stored %d times after the replay", seq, n)
		}
	}
	after := snapshot(t, e.store)
	if len(after) != len(before) {
		t.Fatalf("%d objects after the replay, %d before", len(after), len(before))
	}
	for key, b := range before {
		if !bytes.Equal(after[key], b) {
			t.Fatalf("object %s missing or changed by a replay with the same model", key)
		}
	}
	if len(res) != 1 || res[0].Stop != "fence" || res[0].Records != 11 || res[0].LateCuts != 2 || res[0].Deleted != 0 {
		t.Fatalf("replay report %+v, want 11 records, 2 late cuts, stopped at the fence", res)
	}
}

// cityRejecter fails deterministically for every user of one city (a record the model cannot
// enrich: recommend_failed); the neutral probe (no city) succeeds.
type cityRejecter struct{ city string }

func (r cityRejecter) Recommend(ctx context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	for _, u := range users {
		if u.City == r.city {
			return Recommendations{}, fmt.Errorf("%w: no embedding for %s", ErrDeterministic, u.City)
		}
	}
	return fakeRecommender{}.Recommend(ctx, users, anchors, k)
}

func inCity(recs [][]byte, city string) [][]byte {
	for i, b := range recs {
		recs[i] = []byte(strings.Replace(string(b), `"city":"Pasadena"`, `"city":"`+city+`"`, 1))
	}
	return recs
}

// TestReplayDeletesStaleObjects pins a replay that left records in two places: a flush whose
// records failed enrichment live (errors/, recommend_failed) and succeed now kept its errors/
// object next to the new output object, and a flush whose records are all rejected now kept
// its live output object next to the new errors/ object. The replay deletes, for every flush
// it redoes, the stored object under a key of that flush it did not rewrite.
func TestReplayDeletesStaleObjects(t *testing.T) {
	e := newTestEnv(t, 1)
	e.Cfg.Flush = FlushConfig{MaxRecords: 100, MaxBytes: 1 << 20, MaxAge: time.Second, WindowGrace: 500 * time.Millisecond}
	putInOneWindow(t, e, inCity(events("d", 0, 3), "Alpha"))
	putInOneWindow(t, e, inCity(events("d", 3, 3), "Beta"))
	recs := readShard(t, e, firstShard, 6)
	if w := windowsOf(recs, e.Cfg.Flush.MaxAge); !(w[0] == w[2] && w[2] < w[3] && w[3] == w[5]) {
		t.Fatalf("want two batches in two windows, got windows %v", w)
	}
	at := func(i int) time.Time { return aws.ToTime(recs[i].ApproximateArrivalTimestamp) }
	seq := func(i int) string { return aws.ToString(recs[i].SequenceNumber) }
	outA, errA := ObjectKey(e.Stream, firstShard, at(0), seq(0), 0, "parquet"), ErrorKey(e.Stream, firstShard, at(0), seq(0), 0)
	outB, errB := ObjectKey(e.Stream, firstShard, at(3), seq(3), 0, "parquet"), ErrorKey(e.Stream, firstShard, at(3), seq(3), 0)
	keys := func() []string {
		var ks []string
		for k := range snapshot(t, e.store) {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}

	// Live: the model cannot enrich Alpha's users.
	live := newTipDriver(t, e, firstShard, cityRejecter{"Alpha"})
	live.take(t, recs)
	live.idleAtTip(t)
	want := []string{outB, errA}
	slices.Sort(want)
	if got := keys(); !slices.Equal(got, want) {
		t.Fatalf("live keys %v, want %v", got, want)
	}

	// The replay's model enriches Alpha's users and not Beta's.
	res, err := Replay(context.Background(), e.Cfg, e.Stream, Deps{Store: e.store, Recommender: cityRejecter{"Beta"}, K: 5, Log: testLogger(t)},
		e.kc, live.fence, ReplayRequest{From: at(0)})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{outA, errB}
	slices.Sort(want)
	if got := keys(); !slices.Equal(got, want) {
		t.Fatalf("keys after the replay %v, want %v", got, want)
	}
	o := e.read(t)
	if err := exactlyOnce(o, "d", 3); err != nil {
		t.Fatalf("output after the replay: %v", err)
	}
	rejected := errorCount(o)
	for i := 3; i < 6; i++ {
		if n := rejected[seq(i)+"/0"]; n != 1 {
			t.Fatalf("Beta record %s in errors/ %d times", seq(i), n)
		}
	}
	for _, er := range o.errors {
		if er.Reason != ReasonRecommendFailed {
			t.Fatalf("errors/ record %s: reason %s", er.SequenceNumber, er.Reason)
		}
	}
	if len(rejected) != 3 {
		t.Fatalf("%d records in errors/, want Beta's 3", len(rejected))
	}
	if len(res) != 1 || res[0].Stop != "fence" || res[0].Objects != 2 || res[0].Deleted != 2 {
		t.Fatalf("replay report %+v, want 2 objects written and 2 deleted", res)
	}
}

// TestReplayFencedByRunningWorker: a replay while the live worker holds the shards and keeps
// writing. What the fence promises (Replay, README "Replay a time range"): the replay reads
// each shard's live checkpoint once, when it starts that shard, rewrites only the records up
// to it and stops there (stop: fence); everything after it is left to the live worker, which
// keeps its leases and checkpoints; and no record is stored twice.
func TestReplayFencedByRunningWorker(t *testing.T) {
	e := newTestEnv(t, 2)
	e.Cfg.Flush = FlushConfig{MaxRecords: 25, MaxBytes: 1 << 20, MaxAge: time.Second, WindowGrace: 500 * time.Millisecond}
	r := start(e.newWorker(t, "live", testLogger(t), nil))
	t.Cleanup(func() { _ = r.stop(t) })
	e.put(t, events("f", 0, 80))
	next := 80
	e.waitExactlyOnce(t, "f", next, 120*time.Second)
	var from time.Time
	for _, rec := range outputRecords(t, e) {
		if from.IsZero() || rec.ArrivalTime.Before(from) {
			from = rec.ArrivalTime
		}
	}

	store, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: "replay", FailoverTime: e.Cfg.FailoverTime}, e.db)
	if err != nil {
		t.Fatal(err)
	}
	// The fence the replay reads; before handing it over, more records are put and the live
	// worker is seen writing past it, so the replay runs with records after its fence in the
	// stream and in the store, and with the live worker still holding the shard.
	fences := map[string]string{}
	fence := func(ctx context.Context, shardID string) (string, error) {
		l := leaseRow(t, store, shardID)
		if l.Owner != "live" || !isDecimal(l.Checkpoint) {
			t.Fatalf("lease of %s before the replay: %+v", shardID, l)
		}
		fences[shardID] = l.Checkpoint
		e.put(t, events("f", next, 40))
		next += 40
		stacktest.Eventually(t, 60*time.Second, 100*time.Millisecond, func() bool { return seqAfter(leaseRow(t, store, shardID).Checkpoint, l.Checkpoint) },
			"the live worker never checkpointed %s past %s", shardID, l.Checkpoint)
		return l.Checkpoint, nil
	}
	res, err := Replay(context.Background(), e.Cfg, e.Stream, Deps{Store: e.store, Recommender: versioned{"fake-v2"}, K: 5, Log: testLogger(t)},
		e.kc, fence, ReplayRequest{From: from})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 {
		t.Fatalf("replay report %+v", res)
	}
	for _, sr := range res {
		if sr.Stop != "fence" || sr.LastSeq != fences[sr.ShardID] || sr.Records == 0 {
			t.Fatalf("shard %s: replay %+v, want it to end exactly at the fence %s", sr.ShardID, sr, fences[sr.ShardID])
		}
	}

	// The live worker writes the rest with its own model; the replay wrote only up to the fence.
	e.waitExactlyOnce(t, "f", next, 120*time.Second)
	for _, rec := range outputRecords(t, e) {
		fence, ok := fences[rec.ShardID]
		if !ok {
			t.Fatalf("record %s of unknown shard %s", rec.SessionID, rec.ShardID)
		}
		want := "fake-v2"
		if seqAfter(rec.SequenceNumber, fence) {
			want = "fake-v1"
		}
		if rec.ModelVersion != want {
			t.Fatalf("record %s (shard %s, seq %s, fence %s) has model %s, want %s", rec.SessionID, rec.ShardID, rec.SequenceNumber, fence, rec.ModelVersion, want)
		}
	}
	for sh, f := range fences {
		if l := leaseRow(t, store, sh); l.Owner != "live" || !seqAfter(l.Checkpoint, f) {
			t.Fatalf("lease of %s after the replay: %+v (fence %s)", sh, l, f)
		}
	}
}

// outputRecords reads every output object's records.
func outputRecords(t *testing.T, e *testEnv) []OutputRecord {
	t.Helper()
	var out []OutputRecord
	for key, b := range snapshot(t, e.store) {
		if strings.HasPrefix(key, ErrorsPrefix+"/") {
			continue
		}
		recs, err := DecodeObject(e.Cfg.Format, b)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		out = append(out, recs...)
	}
	return out
}
