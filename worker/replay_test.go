package worker

import (
	"bytes"
	"context"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

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
