package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/stacktest"
)

// reshardKeys is the partition key of record i in the reshard tests: 16 keys, spread over the
// hash space by Kinesis's MD5, each with its records produced in index order.
func reshardKeys(i int) string { return fmt.Sprintf("key-%02d", i%16) }

// waitShards waits until the stream is ACTIVE with n shards listed and returns them.
func (e *testEnv) waitShards(t testing.TB, n int) []ktypes.Shard {
	t.Helper()
	var shards []ktypes.Shard
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		out, err := e.kc.DescribeStream(context.Background(), &kinesis.DescribeStreamInput{StreamName: aws.String(e.Stream)})
		if err != nil || out.StreamDescription.StreamStatus != ktypes.StreamStatusActive {
			return false
		}
		shards = out.StreamDescription.Shards
		return len(shards) == n
	}, "stream does not have %d shards", n)
	return shards
}

// reshardUnderTraffic runs the reshard scenarios: two workers on a 2-shard stream under steady
// traffic on 16 keys; the worker holding shard kill is killed hard just before reshard runs;
// then the traffic goes on, and every record must be written once, each key's records in the
// order they were produced (first durable write), across the reshard and the take-over.
func reshardUnderTraffic(t *testing.T, kill string, reshard func(ctx context.Context, e *testEnv) error, wantShards int) {
	e := newTestEnv(t, 2)
	log := testLogger(t)
	order := &writeOrder{first: map[string]int{}}
	tr := e.startTraffic(t, "r", 100*time.Millisecond, 8, func(i int) (string, *string) { return reshardKeys(i), nil })
	w1 := e.startMember(t, "r1", log, order)
	w2 := e.startMember(t, "r2", log, order)
	observer := leaseStore(t, e.db, e.DynamoDB.LeaseTable, "observer", e.Cfg.FailoverTime, nil)
	var holder *member
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		n, ls := e.owners(t, observer)
		if n["r1"] != 1 || n["r2"] != 1 {
			return false
		}
		for _, l := range ls {
			if l.ShardID == kill {
				holder = map[string]*member{"r1": w1, "r2": w2}[l.Owner]
			}
		}
		return holder != nil
	}, "the two workers did not take one shard each")
	// Let records flow through both shards for a little while.
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		order.mu.Lock()
		defer order.mu.Unlock()
		return order.n >= 4
	}, "no objects written")
	holder.kill()
	if err := reshard(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	shards := e.waitShards(t, wantShards)
	// Traffic goes to the children while the killed worker's parent waits for its take-over;
	// it stops once every child has been checkpointed.
	children := map[string]bool{}
	for _, s := range shards {
		if aws.ToString(s.ParentShardId) != "" {
			children[aws.ToString(s.ShardId)] = true
		}
	}
	stacktest.Eventually(t, 60*time.Second, 200*time.Millisecond, func() bool {
		_, ls := e.owners(t, observer)
		done := 0
		for _, l := range ls {
			if children[l.ShardID] && l.Checkpoint != "" {
				done++
			}
		}
		return done == len(children)
	}, "the children %v were not all checkpointed", children)
	n := tr.halt()
	e.waitExactlyOnce(t, "r", n, 120*time.Second)
	if err := order.check("r", n, reshardKeys); err != nil {
		t.Fatal(err)
	}
	// The table: every closed parent finished, every child checkpointed.
	_, ls := e.owners(t, observer)
	rows := map[string]checkpoint.Lease{}
	for _, l := range ls {
		rows[l.ShardID] = l
	}
	for _, s := range shards {
		l := rows[aws.ToString(s.ShardId)]
		closed := s.SequenceNumberRange.EndingSequenceNumber != nil
		if closed && !l.Closed() || !closed && (l.Checkpoint == "" || l.Closed()) {
			t.Fatalf("shard %s (closed %v): lease %+v", aws.ToString(s.ShardId), closed, l)
		}
	}
}

// TestMergeWithWorkerKilled: two shards merge into one while the worker holding the adjacent
// parent (AdjacentParentShardId, which the library ignores) is killed. The child is leased
// only once both parents reached SHARD_END, so no key's records of the child are written
// before that key's last records of the killed worker's parent, which a survivor writes after
// failover_time.
func TestMergeWithWorkerKilled(t *testing.T) {
	const left, right = "shardId-000000000000", "shardId-000000000001"
	reshardUnderTraffic(t, right, func(ctx context.Context, e *testEnv) error {
		_, err := e.kc.MergeShards(ctx, &kinesis.MergeShardsInput{StreamName: aws.String(e.Stream),
			ShardToMerge: aws.String(left), AdjacentShardToMerge: aws.String(right)})
		if err != nil {
			return fmt.Errorf("merge shards: %w", err)
		}
		return nil
	}, 3)
}

// TestSplitWithWorkerKilled: a shard splits while the worker holding it is killed; a survivor
// takes the parent over after failover_time and reads it to its end before either child is
// leased.
func TestSplitWithWorkerKilled(t *testing.T) {
	const parent = "shardId-000000000000"
	reshardUnderTraffic(t, parent, func(ctx context.Context, e *testEnv) error {
		_, err := e.kc.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(e.Stream), ShardToSplit: aws.String(parent),
			NewStartingHashKey: aws.String("85070591730234615865843651857942052864")}) // 2^126: the middle of the parent's half
		if err != nil {
			return fmt.Errorf("split shard: %w", err)
		}
		return nil
	}, 4)
}

// TestSIGTERMWhileParentUnfinished: a shard splits while the worker holding it is dead (its
// lease not yet expired). The survivor must not lease a child before the parent reaches
// SHARD_END: v1.0.0 would start the child's consumer, which then waits for the parent without
// renewing its lease and without looking at the stop signal, so a SIGTERM in that state could
// not drain. Here no child is leased, and SIGTERM drains within shutdown_timeout.
func TestSIGTERMWhileParentUnfinished(t *testing.T) {
	e := newTestEnv(t, 1)
	e.Cfg.FailoverTime = 8 * time.Second
	e.Cfg.LeaseSafetyMargin = 2 * time.Second
	e.Cfg.ShutdownTimeout = 5 * time.Second
	log := testLogger(t)
	const parent = "shardId-000000000000"
	recs := make([][]byte, 20)
	for i := range recs {
		recs[i] = event(i, "u")
	}
	e.put(t, recs)
	w1 := e.startMember(t, "u1", log, nil)
	observer := leaseStore(t, e.db, e.DynamoDB.LeaseTable, "observer", e.Cfg.FailoverTime, nil)
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		n, _ := e.owners(t, observer)
		return n["u1"] == 1
	}, "u1 did not lease the shard")
	w2 := e.startMember(t, "u2", log, nil)
	w1.kill()
	killed := time.Now()
	if _, err := e.kc.SplitShard(context.Background(), &kinesis.SplitShardInput{StreamName: aws.String(e.Stream), ShardToSplit: aws.String(parent),
		NewStartingHashKey: aws.String("170141183460469231731687303715884105728")}); err != nil {
		t.Fatal(err)
	}
	shards := e.waitShards(t, 3)
	var children []string
	for _, s := range shards {
		if aws.ToString(s.ParentShardId) == parent {
			children = append(children, aws.ToString(s.ShardId))
		}
	}
	// u2's event loop knows the children (its shard list has them) ...
	stacktest.Eventually(t, 10*time.Second, 50*time.Millisecond, func() bool {
		s := w2.w.running.Load()
		return s != nil && s.guard.isChild(children[0]) && s.guard.isChild(children[1])
	}, "u2 never listed the children")
	// ... and passes over them many times while the parent's lease has not expired: no child
	// may be leased before the parent is finished.
	stacktest.Eventually(t, e.Cfg.FailoverTime, 100*time.Millisecond, func() bool {
		_, ls := e.owners(t, observer)
		for _, l := range ls {
			if l.ShardID != parent && l.Owner != "" {
				t.Fatalf("child %s leased by %s while its parent was unfinished", l.ShardID, l.Owner)
			}
		}
		return time.Since(killed) > e.Cfg.FailoverTime/2 // a bounded observation window, well before the parent expires
	}, "")
	began := time.Now()
	w2.r.cancel() // SIGTERM
	select {
	case err := <-w2.r.done:
		if err != nil {
			t.Fatalf("u2's drain: %v", err)
		}
	case <-time.After(2 * e.Cfg.ShutdownTimeout):
		t.Fatal("u2 did not stop")
	}
	if d := time.Since(began); d > e.Cfg.ShutdownTimeout {
		t.Fatalf("drain took %s, bound %s", d, e.Cfg.ShutdownTimeout)
	}
	w2.r.done <- nil // for the cleanup
}
