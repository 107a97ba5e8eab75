package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"

	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// untimed marks a payload of timedPage that has no ApproximateArrivalTimestamp.
var untimed = time.Time{}

// timedPage turns payloads into Kinesis records with increasing sequence numbers arriving at
// the given times (untimed: no ApproximateArrivalTimestamp at all).
func (e *seamEnv) timedPage(payloads [][]byte, arrivals []time.Time) []ktypes.Record {
	out := make([]ktypes.Record, len(payloads))
	for i, b := range payloads {
		e.seq++
		out[i] = ktypes.Record{Data: b, SequenceNumber: aws.String(fmt.Sprint(e.seq)), PartitionKey: aws.String("pk")}
		if !arrivals[i].IsZero() {
			out[i].ApproximateArrivalTimestamp = aws.Time(arrivals[i])
		}
	}
	return out
}

// tinyAggregate is a valid aggregate of n user records of two bytes each: at ~8 bytes a user
// record, the densest a KPL aggregate gets (~175,000 in a 1 MiB Kinesis record).
func tinyAggregate(t testing.TB, n int) []byte {
	t.Helper()
	data := make([][]byte, n)
	for i := range data {
		data[i] = []byte("{}")
	}
	b, err := Aggregate("tiny", data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// chunkWatcher is the fake Recommender, noting the most user records the processor held
// expanded at once (its batch, read on the shard's goroutine during the call).
type chunkWatcher struct {
	p        *processor
	maxBatch int
}

func (w *chunkWatcher) Recommend(ctx context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	w.maxBatch = max(w.maxBatch, len(w.p.batch))
	return fakeRecommender{}.Recommend(ctx, users, anchors, k)
}

// TestKPLPageTakenInChunks pins the KPL memory bomb: one 1 MiB aggregate can hold ~175,000
// tiny user records, and a page was expanded whole (a 10 MB page, millions of user records at
// once). An aggregate of more user records than aggregateLimit is now one bad_kpl_aggregate
// entry, and a page is taken in chunks of at most flush.max_records user records; the
// neighbours of the rejected aggregate are written.
func TestKPLPageTakenInChunks(t *testing.T) {
	dir, err := objstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Flush = FlushConfig{MaxRecords: 500, MaxBytes: 64 << 20, MaxAge: time.Hour}
	w := &chunkWatcher{}
	e := newSeamEnv(t, cfg, dir, w)
	w.p = e.p
	bomb := tinyAggregate(t, 100_000)
	payloads := [][]byte{event(0, "c")}
	next := 1
	for i := range 20 {
		data := make([][]byte, 400)
		for j := range data {
			data[j] = compactEvent(next, "c")
			next++
		}
		agg, err := Aggregate(fmt.Sprintf("pk-%d", i), data)
		if err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, agg)
		if i == 9 {
			payloads = append(payloads, bomb)
		}
	}
	payloads = append(payloads, event(next, "c"))
	next++
	batch := e.records(payloads...)
	e.process(batch)
	e.p.Shutdown(&kcl.ShutdownInput{ShutdownReason: kcl.TERMINATE, Checkpointer: e.cp})
	if w.maxBatch > cfg.Flush.MaxRecords {
		t.Fatalf("%d user records expanded at once, want at most flush.max_records (%d)", w.maxBatch, cfg.Flush.MaxRecords)
	}
	recs, errs, _ := readAll(t, dir)
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[r.SessionID] {
			t.Fatalf("%s written twice", r.SessionID)
		}
		seen[r.SessionID] = true
	}
	if len(recs) != next {
		t.Fatalf("%d records written, want %d (every neighbour of the rejected aggregate)", len(recs), next)
	}
	if len(errs) != 1 {
		t.Fatalf("%d errors/ entries, want the over-limit aggregate as one", len(errs))
	}
	if er := errs[0]; er.Reason != ReasonBadKPLAggregate || !strings.Contains(er.Message, "100000 user records") ||
		!strings.Contains(er.Message, "(10000: flush.max_records, at least 10000)") || !bytes.Equal(er.PayloadBase64, bomb) ||
		er.SequenceNumber != aws.ToString(batch[11].SequenceNumber) {
		t.Fatalf("errors/ entry: reason %s, message %q, sequence %s, %d payload bytes", er.Reason, er.Message, er.SequenceNumber, len(er.PayloadBase64))
	}
}

// TestOverLimitAggregateRejectedBeforeDecoding: an aggregate over the limit is rejected from a
// count of its protobuf fields, without decoding its ~100,000 user records.
func TestOverLimitAggregateRejectedBeforeDecoding(t *testing.T) {
	bomb := tinyAggregate(t, 100_000)
	var err error
	allocs := testing.AllocsPerRun(3, func() { _, err = parseAggregate(bomb, 500) })
	if err == nil || !strings.Contains(err.Error(), "100000 user records") {
		t.Fatalf("parseAggregate: %v, want the over-limit error", err)
	}
	if allocs > 20 {
		t.Fatalf("%v allocations to reject an over-limit aggregate, want a handful", allocs)
	}
	if agg, err := parseAggregate(tinyAggregate(t, 500), 500); err != nil || len(agg.Records) != 500 {
		t.Fatalf("an aggregate at the limit: %v", err)
	}
	// A small flush.max_records does not reject ordinary aggregates.
	if got := aggregateLimit(FlushConfig{MaxRecords: 25}); got != minAggregateLimit {
		t.Fatalf("aggregate limit with flush.max_records 25: %d", got)
	}
	if got := aggregateLimit(FlushConfig{MaxRecords: 20000}); got != 20000 {
		t.Fatalf("aggregate limit with flush.max_records 20000: %d", got)
	}
}

// chunkInput is a page pair exercising every flush boundary: several windows across an hour
// boundary, aggregates reaching and passing flush.max_records (50), corrupt and over-limit
// aggregates, a malformed event and a record without arrival time.
func chunkInput(t *testing.T, e *seamEnv) [][]ktypes.Record {
	t.Helper()
	t0 := time.Date(2026, 3, 1, 9, 59, 58, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var payloads [][]byte
	var arrivals []time.Time
	add := func(when time.Time, b ...[]byte) {
		for _, p := range b {
			payloads = append(payloads, p)
			arrivals = append(arrivals, when)
		}
	}
	for i := range 10 {
		add(at(0), event(i, "q"))
	}
	add(at(100*time.Millisecond), aggregateOf(t, "q", 100, 30))
	add(at(200*time.Millisecond), []byte(`{"session_id":`))
	add(at(300*time.Millisecond), aggregateOf(t, "q", 200, 50))
	add(at(400*time.Millisecond), corruptAggregates(t)["md5 mismatch"])
	add(at(500*time.Millisecond), aggregateOf(t, "q", 300, 60), tinyAggregate(t, minAggregateLimit+1))
	add(untimed, event(400, "q"))
	add(at(1200*time.Millisecond), aggregateOf(t, "q", 500, 20))
	for i := range 5 {
		add(at(2500*time.Millisecond), event(600+i, "q"))
	}
	add(at(2600*time.Millisecond), aggregateOf(t, "q", 700, 45), event(800, "q"))
	recs := e.timedPage(payloads, arrivals)
	return [][]ktypes.Record{recs[:13], recs[13:]}
}

// TestChunkSizeKeepsObjects: taking a page in chunks does not move a flush boundary: with
// chunks of one Kinesis record and with the whole page as one chunk, the same keys are written
// with the same bytes, and the same checkpoints.
func TestChunkSizeKeepsObjects(t *testing.T) {
	run := func(chunk int) (map[string][]byte, []string) {
		dir, err := objstore.Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig()
		cfg.Flush = FlushConfig{MaxRecords: 50, MaxBytes: 64 << 20, MaxAge: time.Second}
		e := newSeamEnv(t, cfg, dir, fakeRecommender{})
		e.s.chunkRecords = chunk
		var checkpoints []string
		cp := &funcCheckpointer{fn: func(seq *string) error {
			checkpoints = append(checkpoints, aws.ToString(seq))
			return nil
		}}
		for _, page := range chunkInput(t, e) {
			e.p.ProcessRecords(&kcl.ProcessRecordsInput{Records: page, Checkpointer: cp})
		}
		e.p.Shutdown(&kcl.ShutdownInput{ShutdownReason: kcl.TERMINATE, Checkpointer: cp})
		return snapshot(t, dir), checkpoints
	}
	small, smallCPs := run(1)
	whole, wholeCPs := run(1 << 30)
	if len(whole) < 6 || len(wholeCPs) < 5 {
		t.Fatalf("%d objects, checkpoints %v: the input should cut several flushes", len(whole), wholeCPs)
	}
	if !slices.Equal(smallCPs, wholeCPs) {
		t.Fatalf("checkpoints with chunks of one record %v, with the page whole %v", smallCPs, wholeCPs)
	}
	if k1, k2 := slices.Sorted(maps.Keys(small)), slices.Sorted(maps.Keys(whole)); !slices.Equal(k1, k2) {
		t.Fatalf("keys with chunks of one record:\n%s\nwith the page whole:\n%s", strings.Join(k1, "\n"), strings.Join(k2, "\n"))
	}
	for k, b := range whole {
		if !bytes.Equal(small[k], b) {
			t.Fatalf("%s differs between chunk sizes", k)
		}
	}
}

// TestMissingArrivalTime pins a record without ApproximateArrivalTimestamp becoming year 0001
// (and an instant tip flush): it goes to errors/ as missing_arrival_time, filed under the
// arrival time of the record before it in its flush, or, with none, under the Unix epoch and
// flushed alone; no key anywhere says year=0001; and the objects do not depend on how the
// stream is paged.
func TestMissingArrivalTime(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 10, 15, 0, 0, time.UTC)
	agg := aggregateOf(t, "n", 10, 3)
	payloads := [][]byte{event(1, "n"), event(2, "n"), event(3, "n"), event(4, "n"), agg, event(5, "n")}
	arrivals := []time.Time{untimed, t0, untimed, t0.Add(10 * time.Millisecond), untimed, t0.Add(20 * time.Millisecond)}
	run := func(pageSize int) (map[string][]byte, []string, []ErrorRecord, []OutputRecord) {
		dir, err := objstore.Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		e := newSeamEnv(t, testConfig(), dir, fakeRecommender{})
		var checkpoints []string
		cp := &funcCheckpointer{fn: func(seq *string) error {
			checkpoints = append(checkpoints, aws.ToString(seq))
			return nil
		}}
		recs := e.timedPage(payloads, arrivals)
		for page := range slices.Chunk(recs, pageSize) {
			e.p.ProcessRecords(&kcl.ProcessRecordsInput{Records: page, Checkpointer: cp})
		}
		e.p.Shutdown(&kcl.ShutdownInput{ShutdownReason: kcl.TERMINATE, Checkpointer: cp})
		out, errs, _ := readAll(t, dir)
		return snapshot(t, dir), checkpoints, errs, out
	}
	objs, checkpoints, errs, out := run(len(payloads))
	for k := range objs {
		if strings.Contains(k, "year=0001") || !strings.Contains(k, "year=2026/month=03/day=01/hour=10/") && !strings.Contains(k, "year=1970/month=01/day=01/hour=00/") {
			t.Fatalf("key %s: want the records' hour or, for a record with no time and none before it, the epoch's", k)
		}
	}
	if len(out) != 3 {
		t.Fatalf("%d records written, want the 3 with an arrival time", len(out))
	}
	if len(errs) != 3 {
		t.Fatalf("%d errors/ entries, want 3: %+v", len(errs), errs)
	}
	// The first has no record before it: the epoch, flushed alone (the first checkpoint).
	want := []struct {
		seq     string
		arrival time.Time
		payload []byte
		says    string
	}{
		{"1001", time.Unix(0, 0), payloads[0], "the Unix epoch"},
		{"1003", t0, payloads[2], "the record before it"},
		{"1005", t0.Add(10 * time.Millisecond), agg, "the record before it"},
	}
	for i, w := range want {
		er := errs[i]
		if er.Reason != ReasonMissingArrivalTime || er.SequenceNumber != w.seq || !er.ArrivalTime.Equal(w.arrival) ||
			!bytes.Equal(er.PayloadBase64, w.payload) || !strings.Contains(er.Message, "no ApproximateArrivalTimestamp") || !strings.Contains(er.Message, w.says) {
			t.Fatalf("errors/ entry %d: %+v", i, er)
		}
	}
	if !slices.Equal(checkpoints, []string{"1001", "1006", ""}) {
		t.Fatalf("checkpoints %v, want the lone untimed record flushed alone, then the rest at SHARD_END", checkpoints)
	}
	// One record a page (another paging, as a replay may get) writes the same objects.
	objs1, checkpoints1, _, _ := run(1)
	if !slices.Equal(checkpoints1, checkpoints) || len(objs1) != len(objs) {
		t.Fatalf("one record a page: checkpoints %v and %d objects, want %v and %d", checkpoints1, len(objs1), checkpoints, len(objs))
	}
	for k, b := range objs {
		if !bytes.Equal(objs1[k], b) {
			t.Fatalf("%s differs with one record a page", k)
		}
	}
}

// failingStore refuses every Put while fail is set (S3 down), counting the refusals.
type failingStore struct {
	objstore.Store
	fail    atomic.Bool
	refused atomic.Int64
}

func (s *failingStore) Put(ctx context.Context, key string, body io.Reader) error {
	if s.fail.Load() {
		s.refused.Add(1)
		return errors.New("failing store: connection refused")
	}
	return s.Store.Put(ctx, key, body)
}

// TestStallAfterPartialFlush pins the stall alarm's blind spot: a flush partway through a
// batch reset the pending clock, the rest of the batch stayed buffered, and when the tip flush
// of that rest then failed forever (S3 down) the shard never showed as stalled. The pending
// clock now restarts at the batch's take time for the records left buffered.
func TestStallAfterPartialFlush(t *testing.T) {
	dir, err := objstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	store := &failingStore{Store: dir}
	cfg := testConfig()
	cfg.Flush = FlushConfig{MaxRecords: 2, MaxBytes: 1 << 20, MaxAge: time.Second, WindowGrace: time.Second}
	cfg.StallAfter = 30 * time.Second
	e := newSeamEnv(t, cfg, store, fakeRecommender{})
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(t0.Add(100 * time.Millisecond).UnixNano())
	e.s.deps.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	took := time.Unix(0, clock.Load())

	// Three records of one window: a flush after the second (max_records), the third stays.
	e.process(e.timedPage([][]byte{event(1, "st"), event(2, "st"), event(3, "st")}, []time.Time{t0, t0, t0}))
	if e.p.buf.n != 1 || e.cp.get() != "1002" {
		t.Fatalf("buffered %d, checkpoint %s; want 1 left after a flush at 1002", e.p.buf.n, e.cp.get())
	}
	// S3 goes down; the window is over and an empty read at the tip flushes it, forever.
	store.fail.Store(true)
	clock.Store(t0.Add(10 * time.Second).UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.p.ProcessRecords(&kcl.ProcessRecordsInput{Checkpointer: e.cp, MillisBehindLatest: 0})
	}()
	t.Cleanup(func() {
		e.abandon() // the drain deadline: the retry loop gives up
		<-done
	})
	stacktest.Eventually(t, 10*time.Second, 20*time.Millisecond, func() bool { return store.refused.Load() >= 2 }, "the tip flush never retried")
	if err := e.s.health(took.Add(cfg.StallAfter / 2)); err != nil {
		t.Fatalf("health before stall_after: %v", err)
	}
	err = e.s.health(took.Add(cfg.StallAfter + time.Second))
	if err == nil || !strings.Contains(err.Error(), "shard "+e.p.shard+" stalled") {
		t.Fatalf("health after stall_after with the tip flush failing: %v, want the shard stalled", err)
	}
	if v := testutil.ToFloat64(e.metrics.ShardStalled.WithLabelValues(e.p.shard)); v != 1 {
		t.Fatalf("shard_stalled = %v, want 1", v)
	}
}
