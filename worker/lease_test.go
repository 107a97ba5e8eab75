package worker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/smithy-go/middleware"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
	kclworker "github.com/vmware/vmware-go-kcl-v2/clientlibrary/worker"
	"go.uber.org/zap"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/checkpoint/checkpointtest"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// manualClock is the tests' hand-advanced monotonic clock for stores.
type manualClock = checkpointtest.Clock

func newManualClock() *manualClock { return checkpointtest.NewClock(time.Unix(2_000_000, 0)) }

// leaseTable gives a test its own lease table on dynalite (deleted at the end) and a client.
func leaseTable(t *testing.T, opts ...awsenv.Option) (*dynamodb.Client, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test needs the local stack (not with -short)")
	}
	return checkpointtest.Table(t, "wl-", opts...)
}

func leaseStore(t testing.TB, db *dynamodb.Client, table, id string, failover time.Duration, clock *manualClock) *checkpoint.Store {
	t.Helper()
	cfg := checkpoint.Config{Table: table, WorkerID: id, FailoverTime: failover}
	if clock != nil {
		cfg.Now = clock.Now
	}
	s, err := checkpoint.New(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	return s
}

// libStatus is a shard status as the library's event loop builds it from ListShards.
func libStatus(id, parent string) *par.ShardStatus {
	return &par.ShardStatus{ID: id, ParentShardId: parent, Mux: &sync.RWMutex{}, StartingSequenceNumber: "49000000000000000000"}
}

func leaseRow(t *testing.T, s *checkpoint.Store, shardID string) checkpoint.Lease {
	t.Helper()
	ls, err := s.ListLeases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.ShardID == shardID {
			return l
		}
	}
	t.Fatalf("no lease row for %s", shardID)
	return checkpoint.Lease{}
}

// TestFailedCheckpointIsNotRemembered: the library's RecordProcessorCheckpointer sets the shard
// status to the new checkpoint before the store writes it. When the write fails (here: the
// lease was taken over meanwhile) the status must go back to the table's value, and a later
// acquisition of the shard by the same worker must start from the table's checkpoint ("none"
// included), not from the value that was never written, which would skip records.
func TestFailedCheckpointIsNotRemembered(t *testing.T) {
	db, table := leaseTable(t)
	cfg := testConfig()
	for _, tc := range []struct {
		name    string
		written string // checkpoint in the table before the failed write ("" = none)
		failed  string // the checkpoint the processor tried to write
	}{
		{"no checkpoint yet", "", "49000000000000000000500"},
		{"after a checkpoint", "49000000000000000000100", "49000000000000000000500"},
		{"SHARD_END", "49000000000000000000100", chk.ShardEnd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shardID := stacktest.UniqueName("shardId-")
			ca, cb := newManualClock(), newManualClock()
			a := leaseStore(t, db, table, "w-a", cfg.FailoverTime, ca)
			b := leaseStore(t, db, table, "w-b", cfg.FailoverTime, cb)
			g := newLeaseGuard(a, "w-a", cfg, zap.NewNop())
			st := libStatus(shardID, "")
			// The event loop: fetch, then acquire.
			if err := g.FetchCheckpoint(st); err != nil && !errors.Is(err, chk.ErrSequenceIDNotFound) {
				t.Fatal(err)
			}
			if err := g.GetLease(st, "w-a"); err != nil {
				t.Fatalf("acquire: %v", err)
			}
			rpc := kclworker.NewRecordProcessorCheckpoint(st, g)
			if tc.written != "" {
				if err := rpc.Checkpoint(aws.String(tc.written)); err != nil {
					t.Fatal(err)
				}
			}
			// w-a stalls; w-b sees the counter frozen for the failover time and takes over.
			sb := libStatus(shardID, "")
			if err := b.FetchCheckpoint(sb); err != nil && !errors.Is(err, chk.ErrSequenceIDNotFound) {
				t.Fatal(err)
			}
			cb.Advance(cfg.FailoverTime)
			if err := b.GetLease(sb, "w-b"); err != nil {
				t.Fatalf("take-over: %v", err)
			}
			// w-a's processor flushes and checkpoints: refused.
			cp := aws.String(tc.failed)
			if tc.failed == chk.ShardEnd {
				cp = nil
			}
			if err := rpc.Checkpoint(cp); !errors.Is(err, checkpoint.ErrLeaseLost) {
				t.Fatalf("checkpoint after the take-over: %v, want ErrLeaseLost", err)
			}
			if got := st.GetCheckpoint(); got != tc.written {
				t.Fatalf("library's status holds checkpoint %q after the failed write, the table %q", got, tc.written)
			}
			// The consumer ends (library: releaseLease); later w-b releases and w-a's event loop
			// takes the shard again.
			st.SetLeaseOwner("")
			_ = g.RemoveLeaseOwner(shardID)
			if err := b.RemoveLeaseOwner(shardID); err != nil {
				t.Fatal(err)
			}
			ca.Advance(2 * cfg.ShardSyncInterval) // the lease view is due for a new Scan
			if err := g.FetchCheckpoint(st); err != nil && !errors.Is(err, chk.ErrSequenceIDNotFound) {
				t.Fatal(err)
			}
			if got := st.GetCheckpoint(); got != tc.written {
				t.Fatalf("event loop's fetch: status checkpoint %q, table %q", got, tc.written)
			}
			if err := g.GetLease(st, "w-a"); err != nil {
				t.Fatalf("re-acquire: %v", err)
			}
			// The new consumer's getStartingPosition.
			if err := g.FetchCheckpoint(st); err != nil && !errors.Is(err, chk.ErrSequenceIDNotFound) {
				t.Fatal(err)
			}
			if got := st.GetCheckpoint(); got != tc.written {
				t.Fatalf("re-acquired consumer would start after %q, the table holds %q", got, tc.written)
			}
		})
	}
}

// TestAbandonedLeaseIsNotReleased: after abandon (a processor gave up with an upload possibly
// in flight) the guard writes no release when the library's consumer ends, renews nothing, and
// the lease is taken again, by another worker or this one, only failover_time after its last
// renewal.
func TestAbandonedLeaseIsNotReleased(t *testing.T) {
	db, table := leaseTable(t)
	cfg := testConfig()
	ca, cb := newManualClock(), newManualClock()
	a := leaseStore(t, db, table, "w-a", cfg.FailoverTime, ca)
	b := leaseStore(t, db, table, "w-b", cfg.FailoverTime, cb)
	g := newLeaseGuard(a, "w-a", cfg, zap.NewNop())
	const shardID = "shardId-000000000000"
	st := libStatus(shardID, "")
	if err := g.GetLease(st, "w-a"); err != nil {
		t.Fatal(err)
	}
	ca.Advance(time.Second)
	if err := g.GetLease(st, "w-a"); err != nil { // a renewal
		t.Fatal(err)
	}
	before := leaseRow(t, a, shardID)
	sb := libStatus(shardID, "")
	if err := b.FetchCheckpoint(sb); err != nil && !errors.Is(err, chk.ErrSequenceIDNotFound) {
		t.Fatal(err)
	}

	g.abandon(shardID)
	if _, ok := g.HeldUntil(shardID); ok {
		t.Fatal("HeldUntil still reports an abandoned lease")
	}
	if err := g.GetLease(st, "w-a"); err == nil {
		t.Fatal("renewal of an abandoned lease succeeded")
	}
	// The library's consumer ends: releaseLease.
	st.SetLeaseOwner("")
	if err := g.RemoveLeaseOwner(shardID); err != nil {
		t.Fatalf("release of an abandoned lease: %v", err)
	}
	if l := leaseRow(t, a, shardID); l.Owner != "w-a" || l.Counter != before.Counter {
		t.Fatalf("row after the consumer ended %+v, want still w-a at counter %d (left to expire)", l, before.Counter)
	}
	// Nobody takes it early, this worker included.
	cb.Advance(cfg.FailoverTime - time.Millisecond)
	if err := b.GetLease(sb, "w-b"); !errors.Is(err, checkpoint.ErrLeaseHeld) {
		t.Fatalf("w-b before expiry: %v, want ErrLeaseHeld", err)
	}
	ca.Advance(cfg.FailoverTime - time.Millisecond)
	if err := g.FetchCheckpoint(st); err != nil && !errors.Is(err, chk.ErrSequenceIDNotFound) {
		t.Fatal(err)
	}
	if err := g.GetLease(st, "w-a"); !errors.Is(err, checkpoint.ErrLeaseHeld) {
		t.Fatalf("w-a re-acquiring its abandoned lease before expiry: %v, want ErrLeaseHeld", err)
	}
	if err := checkpointAfter(a, shardID); !errors.Is(err, checkpoint.ErrLeaseLost) {
		t.Fatalf("checkpoint under an abandoned lease: %v, want ErrLeaseLost", err)
	}
	cb.Advance(time.Millisecond)
	if err := b.GetLease(sb, "w-b"); err != nil {
		t.Fatalf("w-b after expiry: %v", err)
	}
}

func checkpointAfter(s *checkpoint.Store, shardID string) error {
	st := libStatus(shardID, "")
	st.SetCheckpoint("49000000000000000000999")
	return s.CheckpointSequence(st)
}

// TestDrainTimeoutLeavesLeasesToExpire: SIGTERM while an upload hangs (S3 unreachable). The
// drain is abandoned at shutdown_timeout and the upload cancelled; the worker must not release
// the lease (a new owner could replay while the cancelled PUT still commits): Run returns
// ErrShutdownTimeout within shutdown_timeout, the row keeps its owner and counter, nobody
// takes it before failover_time, and then the next owner writes every record once.
func TestDrainTimeoutLeavesLeasesToExpire(t *testing.T) {
	e := newTestEnv(t, 1)
	e.Cfg.ShutdownTimeout = 4 * time.Second
	e.Cfg.Flush = FlushConfig{MaxRecords: 5, MaxBytes: 1 << 20, MaxAge: time.Second}
	const n = 30
	recs := make([][]byte, n)
	for i := range recs {
		recs[i] = event(i, "h")
	}
	e.put(t, recs)
	log := testLogger(t)
	st := &stalledStore{Store: e.openStore(t), started: make(chan struct{}, 1)}
	st.stall.Store(true)
	w := e.workerWith(t, "h1", log, st, e.db)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-st.started:
	case <-time.After(60 * time.Second):
		t.Fatal("no upload started")
	}
	observer := leaseStore(t, e.db, e.DynamoDB.LeaseTable, "observer", e.Cfg.FailoverTime, nil)
	const shardID = "shardId-000000000000"
	began := time.Now()
	cancel() // SIGTERM
	select {
	case err := <-done:
		if !errors.Is(err, ErrShutdownTimeout) {
			t.Fatalf("Run: %v, want ErrShutdownTimeout", err)
		}
	case <-time.After(2 * e.Cfg.ShutdownTimeout):
		t.Fatal("Run did not return")
	}
	if d := time.Since(began); d > e.Cfg.ShutdownTimeout {
		t.Fatalf("drain took %s, bound %s", d, e.Cfg.ShutdownTimeout)
	}
	// The consumer ended (Run waits for it) without releasing: the row is still h1's, and
	// another worker takes it only once it has expired.
	if l := leaseRow(t, observer, shardID); l.Owner != "h1" {
		t.Fatalf("row after the abandoned drain %+v, want still owned by h1 (left to expire)", l)
	}
	r := start(e.newWorker(t, "h2", log, nil))
	e.waitExactlyOnce(t, "h", n, 60*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatalf("h2: %v", err)
	}
}

// workerWith builds a worker with the given output store and DynamoDB client.
func (e *testEnv) workerWith(t testing.TB, id string, log *zap.Logger, out objstore.Store, db *dynamodb.Client) *Worker {
	t.Helper()
	cfg := e.Cfg
	cfg.WorkerID = id
	store, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: id, FailoverTime: cfg.FailoverTime, Logger: log}, db)
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(cfg, Stream{Kinesis: e.Kinesis, DynamoDB: e.DynamoDB},
		Deps{Store: out, Recommender: fakeRecommender{}, K: 5, Log: log,
			IsLeaseLost: func(err error) bool { return errors.Is(err, checkpoint.ErrLeaseLost) }}, e.kc, store)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// iteratorCalls counts the GetShardIterator calls of a Kinesis client, by shard.
type iteratorCalls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *iteratorCalls) option(cfg *aws.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("countIterators",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				out, md, err := next.HandleInitialize(ctx, in)
				if p, ok := in.Parameters.(*kinesis.GetShardIteratorInput); ok && err == nil {
					c.mu.Lock()
					c.n[aws.ToString(p.ShardId)]++
					c.mu.Unlock()
				}
				return out, md, err
			}), middleware.After)
	})
}

func (c *iteratorCalls) get(shard string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[shard]
}

// TestChildStartsAtTrimHorizon: with initial_position LATEST, a shard without parent and
// checkpoint starts at the tip (what was written before is skipped), but the children of a
// split start at TRIM_HORIZON: everything written to them while the parent drained is
// processed, exactly once.
func TestChildStartsAtTrimHorizon(t *testing.T) {
	e := newTestEnv(t, 1)
	e.Cfg.InitialPosition = "LATEST"
	const parent = "shardId-000000000000"
	ctx := context.Background()
	skipped := make([][]byte, 20)
	for i := range skipped {
		skipped[i] = event(i, "z")
	}
	e.put(t, skipped) // before the worker starts: LATEST skips these

	calls := &iteratorCalls{n: map[string]int{}}
	kc, err := awsenv.Kinesis(ctx, e.Kinesis, calls.option)
	if err != nil {
		t.Fatal(err)
	}
	log := testLogger(t)
	store, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: "c1", FailoverTime: e.Cfg.FailoverTime, Logger: log}, e.db)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.Cfg
	cfg.WorkerID = "c1"
	w, err := New(cfg, Stream{Kinesis: e.Kinesis, DynamoDB: e.DynamoDB}, Deps{Store: e.openStore(t), Recommender: fakeRecommender{}, K: 5, Log: log,
		IsLeaseLost: func(err error) bool { return errors.Is(err, checkpoint.ErrLeaseLost) }}, kc, store)
	if err != nil {
		t.Fatal(err)
	}
	r := start(w)
	defer func() { _ = r.stop(t) }()
	stacktest.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool { return calls.get(parent) > 0 },
		"the parent's consumer never took an iterator")

	next := 0
	putN := func(n int) {
		b := make([][]byte, n)
		for i := range b {
			b[i] = event(next, "c")
			next++
		}
		e.put(t, b)
	}
	putN(60) // to the parent, after its LATEST iterator
	if _, err := e.kc.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(e.Stream), ShardToSplit: aws.String(parent),
		NewStartingHashKey: aws.String("170141183460469231731687303715884105728")}); err != nil {
		t.Fatalf("split shard: %v", err)
	}
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		out, err := e.kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(e.Stream)})
		return err == nil && len(out.Shards) == 3
	}, "split did not give two children")
	putN(120) // to the children, before they are leased (the parent is still draining)

	o := e.waitExactlyOnce(t, "c", next, 90*time.Second)
	for id := range o.count {
		if strings.HasPrefix(id, "z-") {
			t.Fatalf("record %s, written before the worker started, was processed despite LATEST", id)
		}
	}
}

// renewalFault fails the next lease renewal sent through a DynamoDB client, once, before it
// reaches the server, with an error the SDK does not retry (a timeout it gave up on).
type renewalFault struct {
	armed atomic.Bool
	fired atomic.Int64
}

func (f *renewalFault) option(cfg *aws.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("failRenewal",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				if p, ok := in.Parameters.(*dynamodb.UpdateItemInput); ok && awsmiddleware.GetOperationName(ctx) == "UpdateItem" &&
					aws.ToString(p.UpdateExpression) == "SET #counter = :next, #lt = :lt" && f.armed.CompareAndSwap(true, false) {
					f.fired.Add(1)
					return middleware.InitializeOutput{}, middleware.Metadata{}, errors.New("injected: request timed out")
				}
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	})
}

// TestRenewalSurvivesTransientError: a lease renewal that fails once for a reason other than
// the lease's state (injected at an SDK middleware on the DynamoDB client) is retried within
// the lease's remaining time: the worker keeps the lease and the same processor keeps its
// buffer (v1.0.0 alone ends the consumer at the first failed renewal, dropping the buffer).
func TestRenewalSurvivesTransientError(t *testing.T) {
	e := newTestEnv(t, 1)
	e.Cfg.Flush = FlushConfig{MaxRecords: 10000, MaxBytes: 1 << 20, MaxAge: 20 * time.Second, WindowGrace: time.Second}
	waitEarlyInWindow(t, e.Cfg.Flush.MaxAge, 14*time.Second)
	const n = 50
	recs := make([][]byte, n)
	for i := range recs {
		recs[i] = event(i, "t")
	}
	e.put(t, recs)
	fault := &renewalFault{}
	db, err := awsenv.DynamoDB(context.Background(), e.DynamoDB, fault.option)
	if err != nil {
		t.Fatal(err)
	}
	log := testLogger(t)
	w := e.workerWith(t, "t1", log, e.store, db)
	r := start(w)
	defer func() { _ = r.stop(t) }()
	const shardID = "shardId-000000000000"
	var p *processor
	stacktest.Eventually(t, 30*time.Second, 50*time.Millisecond, func() bool {
		s := w.running.Load()
		if s == nil {
			return false
		}
		s.mu.Lock()
		p = s.live[shardID]
		s.mu.Unlock()
		rep := s.snapshot()
		return p != nil && len(rep) == 1 && rep[0].buffered == n
	}, "the worker did not buffer the %d records", n)
	observer := leaseStore(t, e.db, e.DynamoDB.LeaseTable, "observer", e.Cfg.FailoverTime, nil)
	fault.armed.Store(true)
	stacktest.Eventually(t, 10*time.Second, 50*time.Millisecond, func() bool { return fault.fired.Load() == 1 }, "no renewal was sent")
	failedAt := leaseRow(t, observer, shardID).Counter
	// Two more renewals go through, by the same processor still holding its buffer.
	stacktest.Eventually(t, 2*e.Cfg.FailoverTime, 50*time.Millisecond, func() bool {
		return leaseRow(t, observer, shardID).Counter >= failedAt+2
	}, "the lease was not renewed after the failure")
	s := w.running.Load()
	s.mu.Lock()
	same := s.live[shardID] == p
	s.mu.Unlock()
	if rep := s.snapshot(); !same || len(rep) != 1 || rep[0].buffered != n {
		t.Fatalf("after a transient renewal failure: same processor %v, report %+v; want the processor and its %d buffered records kept", same, rep, n)
	}
	if l := leaseRow(t, observer, shardID); l.Owner != "t1" {
		t.Fatalf("row %+v, want still t1's", l)
	}
	e.waitExactlyOnce(t, "t", n, 60*time.Second)
}
