package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/icetable"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// timeline records, in order, the worker's completed uploads and checkpoints per shard.
type timeline struct {
	mu     sync.Mutex
	events []tlEvent
}

type tlEvent struct {
	op    string // "put" or "checkpoint"
	shard string
	value string // object key or checkpoint
}

func (tl *timeline) add(op, shard, value string) {
	tl.mu.Lock()
	tl.events = append(tl.events, tlEvent{op, shard, value})
	tl.mu.Unlock()
}

func (tl *timeline) snapshot() []tlEvent {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return slices.Clone(tl.events)
}

var shardInKey = regexp.MustCompile(`shardId-[0-9]{12}`)

// recordingStore notes each completed Put on the timeline (our own seam, the real S3 behind).
type recordingStore struct {
	objstore.Store
	tl *timeline
}

func (s recordingStore) Put(ctx context.Context, key string, body io.Reader) error {
	err := s.Store.Put(ctx, key, body)
	if err == nil {
		s.tl.add("put", shardInKey.FindString(key), key)
	}
	return err
}

// recordingCheckpointer notes each successful checkpoint write; HeldUntil and the rest of the
// fenced store are promoted.
type recordingCheckpointer struct {
	*checkpoint.Store
	tl *timeline
}

func (c recordingCheckpointer) CheckpointSequence(shard *par.ShardStatus) error {
	err := c.Store.CheckpointSequence(shard)
	if err == nil {
		c.tl.add("checkpoint", shard.ID, shard.GetCheckpoint())
	}
	return err
}

// countingRecommender counts the users it answered: every valid record the worker took.
type countingRecommender struct {
	fakeRecommender
	n *atomic.Int64
}

func (c countingRecommender) Recommend(ctx context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	r, err := c.fakeRecommender.Recommend(ctx, users, anchors, k)
	if err == nil {
		c.n.Add(int64(len(users)))
	}
	return r, err
}

// TestShardSplit: a shard split during a run. The parent is read to its end, its buffer is
// flushed and SHARD_END checkpointed before anything of the children is written, and every
// record (before and after the split) is written exactly once, each in its own shard's objects.
func TestShardSplit(t *testing.T) { testShardSplit(t, false) }

// TestShardSplitIceberg is TestShardSplit with the output committed to an Iceberg table: the
// parent's last commit lands before its SHARD_END checkpoint (a flush's commit is asked for
// without waiting, so Shutdown must wait for it), and every record is in the table once.
func TestShardSplitIceberg(t *testing.T) { testShardSplit(t, true) }

// recordingTable notes each landed commit on the timeline as the shard's "put".
type recordingTable struct {
	Table
	tl *timeline
}

func (r recordingTable) Submit(ctx context.Context, req icetable.Request) <-chan error {
	in := r.Table.Submit(ctx, req)
	out := make(chan error, 1)
	go func() {
		err := <-in
		if err == nil {
			r.tl.add("put", req.Shard.Shard, req.Files[0])
		}
		out <- err
	}()
	return out
}

func testShardSplit(t *testing.T, iceberg bool) {
	e := newTestEnv(t, 1)
	if iceberg {
		e.useIceberg(t)
	}
	// Count flushes only within a 20 s window, so the parent's last records are still buffered
	// when it closes: only the SHARD_END flush can write them. The records are put early in a
	// window, so the window cannot end (and flush them) before the split.
	e.Cfg.Flush = FlushConfig{MaxRecords: 40, MaxBytes: 1 << 20, MaxAge: 20 * time.Second, WindowGrace: time.Second}
	waitEarlyInWindow(t, e.Cfg.Flush.MaxAge, 14*time.Second)
	const parent = "shardId-000000000000"
	const before, after = 150, 160
	ctx := context.Background()
	next := 0
	putN := func(n int) {
		b := make([][]byte, n)
		for i := range b {
			b[i] = event(next, "p")
			next++
		}
		e.put(t, b)
	}
	putN(before)

	tl := &timeline{}
	log := testLogger(t)
	store, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: "s1", FailoverTime: e.Cfg.FailoverTime, Logger: log}, e.db)
	if err != nil {
		t.Fatal(err)
	}
	var taken atomic.Int64
	cfg := e.Cfg
	cfg.WorkerID = "s1"
	w, err := New(cfg, Stream{Kinesis: e.Kinesis, DynamoDB: e.DynamoDB},
		Deps{Store: recordingStore{e.openStore(t), tl}, Recommender: countingRecommender{n: &taken}, K: 5, Log: log,
			IsLeaseLost: func(err error) bool { return errors.Is(err, checkpoint.ErrLeaseLost) }},
		e.kc, recordingCheckpointer{store, tl})
	if err != nil {
		t.Fatal(err)
	}
	if iceberg {
		c, err := awsenv.S3(ctx, e.S3)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.attachTable(w, c); err != nil {
			t.Fatal(err)
		}
		w.SetTable(recordingTable{w.deps.Table, tl})
	}
	r := start(w)
	stopped := false
	defer func() {
		if !stopped {
			_ = r.stop(t)
		}
	}()

	// Mid-run: the parent has written its first objects and holds the rest in its buffer.
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool { return taken.Load() == before && len(e.read(t).count) >= 80 },
		"worker did not take the parent's %d records (taken %d)", before, taken.Load())
	if n := len(e.read(t).count); n >= before {
		t.Fatalf("%d of %d parent records written before the split; the test needs some buffered", n, before)
	}
	if _, err := e.kc.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(e.Stream), ShardToSplit: aws.String(parent),
		NewStartingHashKey: aws.String("170141183460469231731687303715884105728")}); err != nil { // 2^127: halves
		t.Fatalf("split shard: %v", err)
	}
	var children []string
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		out, err := e.kc.DescribeStream(ctx, &kinesis.DescribeStreamInput{StreamName: aws.String(e.Stream)})
		if err != nil || out.StreamDescription.StreamStatus != ktypes.StreamStatusActive {
			return false
		}
		children = children[:0]
		for _, s := range out.StreamDescription.Shards {
			if aws.ToString(s.ParentShardId) == parent {
				children = append(children, aws.ToString(s.ShardId))
			}
		}
		return len(children) == 2
	}, "split of %s did not give two children", parent)
	putN(after)

	observer, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: "observer", FailoverTime: e.Cfg.FailoverTime}, e.db)
	if err != nil {
		t.Fatal(err)
	}
	leases := func() map[string]checkpoint.Lease {
		ls, _ := observer.ListLeases(ctx)
		m := map[string]checkpoint.Lease{}
		for _, l := range ls {
			m[l.ShardID] = l
		}
		return m
	}
	stacktest.Eventually(t, 90*time.Second, 250*time.Millisecond, func() bool { return taken.Load() == before+after },
		"children not read: %d of %d records taken", taken.Load(), before+after)
	// The children's windows are flushed once the stream proves them complete.
	o := e.waitExactlyOnce(t, "p", before+after, 90*time.Second)
	stopped = true
	if err := r.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}

	// Every record once, in the shard it was put to.
	for i := range before + after {
		id := fmt.Sprintf("p-%06d", i)
		sh := o.shard[id]
		if i < before && sh != parent || i >= before && !slices.Contains(children, sh) {
			t.Fatalf("record %s in shard %q; want %s before the split, one of %v after", id, sh, parent, children)
		}
	}
	// The lease table: parent finished, children checkpointed.
	ls := leases()
	if l := ls[parent]; l.Checkpoint != checkpoint.ShardEnd {
		t.Fatalf("parent lease %+v, want checkpoint %s", l, checkpoint.ShardEnd)
	}
	for _, c := range children {
		if l := ls[c]; l.Checkpoint == "" || l.Checkpoint == checkpoint.ShardEnd || l.ParentShardID != parent {
			t.Fatalf("child lease %+v, want a sequence checkpoint and parent %s", l, parent)
		}
	}
	// The order of writes: the parent's last object, then its SHARD_END checkpoint, then
	// anything of a child.
	ev := tl.snapshot()
	lastParentPut, shardEnd, firstChild := -1, -1, -1
	for i, x := range ev {
		switch {
		case x.shard == parent && x.op == "put":
			lastParentPut = i
		case x.shard == parent && x.op == "checkpoint" && x.value == checkpoint.ShardEnd:
			shardEnd = i
		case slices.Contains(children, x.shard) && firstChild < 0:
			firstChild = i
		}
	}
	if lastParentPut < 0 || shardEnd < 0 || firstChild < 0 || !(lastParentPut < shardEnd && shardEnd < firstChild) {
		t.Fatalf("write order: last parent put #%d, parent SHARD_END #%d, first child write #%d; want increasing (timeline %v)",
			lastParentPut, shardEnd, firstChild, ev)
	}
}

// waitEarlyInWindow returns once the current flush window (of length window, aligned to the
// epoch) has at least left to run, waiting for the next window if needed.
func waitEarlyInWindow(t testing.TB, window, left time.Duration) {
	t.Helper()
	now := time.Now()
	end := now.Truncate(window).Add(window)
	if end.Sub(now) >= left {
		return
	}
	time.Sleep(time.Until(end) + 50*time.Millisecond) // the next window starts: a condition on the clock
}
