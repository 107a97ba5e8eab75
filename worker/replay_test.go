package worker

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// replayInput puts a stream's worth of mixed input in bursts spread over several flush
// windows: plain events, malformed events and KPL aggregates. It returns the number of valid
// events (all of run) and of rejected records.
func replayInput(t *testing.T, e *testEnv, run string) (valid, rejected int) {
	t.Helper()
	next := 0
	for burst := range 4 {
		var recs [][]byte
		for range 40 {
			recs = append(recs, event(next, run))
			next++
		}
		recs = append(recs, aggregateOf(t, run, next, 30))
		next += 30
		recs = append(recs, aggregateOf(t, run, next, 1))
		next++
		recs = append(recs, []byte(`{"session_id":`), malformedEvent(next, run), corruptAggregates(t)["index out of range"])
		rejected += 3
		e.put(t, recs)
		if burst < 3 {
			// Spread the input over several 1 s windows: shaping the data, not waiting for it.
			time.Sleep(1200 * time.Millisecond)
		}
	}
	return next, rejected
}

// snapshot reads every object of a store: key → bytes.
func snapshot(t *testing.T, s objstore.Store) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	objs, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, o := range objs {
		b, err := objstore.ReadAll(ctx, s, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		out[o.Key] = b
	}
	return out
}

// TestReplayIsByteIdentical: a stream processed once, then replayed from TRIM_HORIZON into a
// second prefix with its own lease table, another GetRecords page size, other timing and a
// SIGKILL between an upload and its checkpoint, gives the same keys holding the same bytes:
// object boundaries and contents are a function of the stream and the flush config only.
func TestReplayIsByteIdentical(t *testing.T) {
	e := newTestEnv(t, 2)
	e.Cfg.Flush = FlushConfig{MaxRecords: 25, MaxBytes: 1 << 20, MaxAge: time.Second, WindowGrace: 500 * time.Millisecond}
	e.Cfg.MaxRecords = 100
	valid, rejected := replayInput(t, e, "b")

	waitAll := func(env *testEnv) {
		env.waitExactlyOnce(t, "b", valid, 120*time.Second)
		stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool { return len(env.read(t).errors) == rejected },
			"want %d rejected records in errors/", rejected)
	}
	r := start(e.newWorker(t, "first", testLogger(t), nil))
	waitAll(e)
	if err := r.stop(t); err != nil {
		t.Fatalf("first run: %v", err)
	}
	first := snapshot(t, e.store)

	// The replay: its own prefix and lease table, small pages, killed once mid-way.
	re := *e
	re.Location = e.Location + "-replay"
	re.DynamoDB.LeaseTable = e.DynamoDB.LeaseTable + "-replay"
	re.store = re.openStore(t)
	re.Cfg.MaxRecords = 7
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = e.db.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(re.DynamoDB.LeaseTable)})
		if objs, err := re.store.List(ctx, ""); err == nil {
			for _, o := range objs {
				_ = re.store.Delete(ctx, o.Key)
			}
		}
	})
	cmd := startChild(t, &re, "replay-1", 3)
	if err := waitExit(t, cmd, 90*time.Second); !killedBySIGKILL(err) {
		t.Fatalf("replay child ended with %v, want SIGKILL between upload and checkpoint", err)
	}
	re.Cfg.MaxRecords = 13
	cmd = startChild(t, &re, "replay-2", 0)
	waitAll(&re)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := waitExit(t, cmd, 30*time.Second); err != nil {
		t.Fatalf("replay worker: %v", err)
	}
	second := snapshot(t, re.store)

	keys := func(m map[string][]byte) []string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return ks
	}
	k1, k2 := keys(first), keys(second)
	if len(k1) != len(k2) {
		t.Fatalf("first run wrote %d objects, the replay %d:\n%v\n%v", len(k1), len(k2), k1, k2)
	}
	if len(k1) < 8 {
		t.Fatalf("only %d objects: the input did not exercise several windows and count cuts", len(k1))
	}
	for i := range k1 {
		if k1[i] != k2[i] {
			t.Fatalf("object %d: key %s in the first run, %s in the replay", i, k1[i], k2[i])
		}
		if !bytes.Equal(first[k1[i]], second[k2[i]]) {
			t.Fatalf("object %s differs between the run and its replay", k1[i])
		}
	}
}

// versioned answers like fakeRecommender under another model version.
type versioned struct{ version string }

func (v versioned) Recommend(ctx context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	r, err := fakeRecommender{}.Recommend(ctx, users, anchors, k)
	r.Version = v.version
	return r, err
}

// TestReplayTimeRange: `recstream replay --from --to` rewrites exactly the objects of the
// windows in the range, in place (same keys, new model version), leaves every other object
// alone, writes no new key, and stops at the live checkpoint.
func TestReplayTimeRange(t *testing.T) {
	e := newTestEnv(t, 2)
	e.Cfg.Flush = FlushConfig{MaxRecords: 25, MaxBytes: 1 << 20, MaxAge: time.Second, WindowGrace: 500 * time.Millisecond}
	valid, rejected := replayInput(t, e, "t")
	r := start(e.newWorker(t, "live", testLogger(t), nil))
	e.waitExactlyOnce(t, "t", valid, 120*time.Second)
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool { return len(e.read(t).errors) == rejected }, "errors/ incomplete")
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e.store)

	// The windows that hold records, from the output itself.
	buf := newBuffer(e.Cfg.Flush)
	windows := map[int64]time.Time{}
	for key, b := range before {
		if strings.HasPrefix(key, ErrorsPrefix+"/") {
			continue
		}
		recs, err := DecodeObject("parquet", b)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			windows[buf.windowOf(rec.ArrivalTime)] = rec.ArrivalTime
		}
	}
	var ws []int64
	for w := range windows {
		ws = append(ws, w)
	}
	slices.Sort(ws)
	if len(ws) < 3 {
		t.Fatalf("records in %d windows; the test needs 3", len(ws))
	}
	from, to := windows[ws[1]], windows[ws[len(ws)-2]]
	fromW, toW := ws[1], ws[len(ws)-2]

	store, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: "replay", FailoverTime: e.Cfg.FailoverTime}, e.db)
	if err != nil {
		t.Fatal(err)
	}
	fence := func(ctx context.Context, shardID string) (string, error) {
		ls, err := store.ListLeases(ctx)
		if err != nil {
			return "", err
		}
		for _, l := range ls {
			if l.ShardID == shardID {
				return l.Checkpoint, nil
			}
		}
		return "", nil
	}
	res, err := Replay(context.Background(), e.Cfg, e.Stream, Deps{Store: e.store, Recommender: versioned{"fake-v2"}, K: 5, Log: testLogger(t)},
		e.kc, fence, ReplayRequest{From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	var replayed int64
	for _, sr := range res {
		if sr.Stop != "to" {
			t.Fatalf("shard %s stopped at %q, want the end of the range", sr.ShardID, sr.Stop)
		}
		replayed += sr.Records
	}
	after := snapshot(t, e.store)
	if len(after) != len(before) {
		t.Fatalf("%d objects after the replay, %d before: a replay must not add keys", len(after), len(before))
	}
	rewritten := 0
	for key, b := range after {
		if _, ok := before[key]; !ok {
			t.Fatalf("new key %s", key)
		}
		if strings.HasPrefix(key, ErrorsPrefix+"/") {
			continue
		}
		recs, err := DecodeObject("parquet", b)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			w := buf.windowOf(rec.ArrivalTime)
			want := "fake-v1"
			if w >= fromW && w <= toW {
				want = "fake-v2"
			}
			if rec.ModelVersion != want {
				t.Fatalf("%s: record of window %d has model %s, want %s (range %d..%d)", key, w, rec.ModelVersion, want, fromW, toW)
			}
		}
		if !bytes.Equal(b, before[key]) {
			rewritten++
		}
	}
	if rewritten == 0 || replayed == 0 {
		t.Fatalf("replay rewrote %d objects (%d records)", rewritten, replayed)
	}
	if err := exactlyOnce(e.read(t), "t", valid); err != nil {
		t.Fatal(err)
	}

	// The fence: a shard the live worker has not checkpointed is not touched, nor one whose
	// checkpoint is a starting position rather than a sequence number (compared as a string,
	// "TRIM_HORIZON" used to fence nothing off).
	for _, cp := range []string{"", "TRIM_HORIZON", "LATEST"} {
		res, err = Replay(context.Background(), e.Cfg, e.Stream, Deps{Store: e.store, Recommender: versioned{"fake-v3"}, K: 5, Log: testLogger(t)},
			e.kc, func(context.Context, string) (string, error) { return cp, nil }, ReplayRequest{From: from})
		if err != nil || len(res) != 2 || res[0].Stop != "not_processed" || res[0].Records != 0 || res[1].Records != 0 {
			t.Fatalf("replay with live checkpoint %q: %+v, %v", cp, res, err)
		}
	}
}
