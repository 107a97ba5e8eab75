package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
	"github.com/prometheus/client_golang/prometheus/testutil"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
)

// opCounter counts the requests a DynamoDB client sends, by operation.
type opCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *opCounter) option(cfg *aws.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(stack *middleware.Stack) error {
		return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("countOps",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				c.mu.Lock()
				c.n[awsmiddleware.GetOperationName(ctx)]++
				c.mu.Unlock()
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	})
}

func (c *opCounter) reset() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

const testSync = 2 * time.Second

func leasingStore(t *testing.T, s *Store, shards []ShardInfo) *Store {
	t.Helper()
	s.SetLeasing(Leasing{SyncInterval: testSync, StealInterval: 8 * time.Second})
	s.SetShards(shards)
	return s
}

func shardIDs(n int) []ShardInfo {
	out := make([]ShardInfo, n)
	for i := range out {
		out[i] = ShardInfo{ID: fmt.Sprintf("shardId-%012d", i)}
	}
	return out
}

// pass does what the library's event loop does in one pass: fetch every shard not held, try
// to lease them in turn until one succeeds, then ListActiveWorkers. It returns the shard
// leased ("" for none).
func pass(t *testing.T, s *Store, statuses map[string]*par.ShardStatus) string {
	t.Helper()
	ids := make([]string, 0, len(statuses))
	for id := range statuses {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	got := ""
	for _, id := range ids {
		st := statuses[id]
		if st.GetLeaseOwner() == s.WorkerID() {
			continue
		}
		if err := s.Peek(st); err != nil && !errors.Is(err, chk.ErrSequenceIDNotFound) {
			t.Fatalf("peek %s: %v", id, err)
		}
		if got != "" || st.GetCheckpoint() == ShardEnd {
			continue
		}
		err := s.GetLease(st, s.WorkerID())
		if err == nil {
			got = id
			continue
		}
		if !errors.As(err, &chk.ErrLeaseNotAcquired{}) {
			t.Fatalf("get lease %s: %v", id, err)
		}
	}
	if _, err := s.ListActiveWorkers(statuses); err != nil {
		t.Fatalf("list active workers: %v", err)
	}
	return got
}

func statusesOf(shards []ShardInfo) map[string]*par.ShardStatus {
	m := map[string]*par.ShardStatus{}
	for _, sh := range shards {
		parent := ""
		if len(sh.Parents) > 0 {
			parent = sh.Parents[0]
		}
		m[sh.ID] = status(sh.ID, parent)
	}
	return m
}

// TestPassReadsOneScan: with Leasing, the library's passes cost one paginated Scan per sync
// interval and no per-shard read, however many shards there are; an acquisition is one
// conditional write.
func TestPassReadsOneScan(t *testing.T) {
	ops := &opCounter{n: map[string]int{}}
	db, table := testTable(t, ops.option)
	clock := newFakeClock()
	shards := shardIDs(64)
	a := leasingStore(t, newStore(t, db, table, "worker-a", clock), shards)
	sa := statusesOf(shards)
	ops.reset()
	for range 5 { // several passes within one sync interval
		if got := pass(t, a, sa); got == "" {
			t.Fatal("a pass leased nothing")
		}
	}
	n := ops.reset()
	if n["Scan"] != 1 || n["GetItem"] != 0 || n["PutItem"] != 5 || len(n) != 2 {
		t.Fatalf("5 passes over 64 shards within a sync interval sent %v; want 1 Scan and 5 PutItem (the new leases)", n)
	}
	clock.Advance(testSync)
	pass(t, a, sa)
	if n := ops.reset(); n["Scan"] != 1 || n["GetItem"] != 0 {
		t.Fatalf("a pass after the sync interval sent %v; want 1 Scan, no GetItem", n)
	}
}

// TestFairShare: three workers take turns on 12 shards; each stops at ceil(12/3) = 4 once it
// sees the others' leases, and a dead worker's shards are shared out by the survivors once
// they have expired.
func TestFairShare(t *testing.T) {
	db, table := testTable(t)
	shards := shardIDs(12)
	clocks := []*fakeClock{newFakeClock(), newFakeClock(), newFakeClock()}
	stores := make([]*Store, 3)
	statuses := make([]map[string]*par.ShardStatus, 3)
	for i := range stores {
		stores[i] = leasingStore(t, newStore(t, db, table, fmt.Sprintf("worker-%d", i), clocks[i]), shards)
		statuses[i] = statusesOf(shards)
	}
	// Everyone has one lease, then sees the others (new Scan).
	for i, s := range stores {
		if pass(t, s, statuses[i]) == "" {
			t.Fatalf("worker-%d leased nothing", i)
		}
	}
	renew := func(i int) {
		for _, st := range statuses[i] {
			if st.GetLeaseOwner() == stores[i].WorkerID() {
				mustLease(t, stores[i], st)
			}
		}
	}
	for round := 0; round < 8; round++ {
		for i, s := range stores {
			clocks[i].Advance(testSync)
			renew(i)
			pass(t, s, statuses[i])
		}
	}
	count := func() map[string]int {
		ls, err := stores[0].ListLeases(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, l := range ls {
			n[l.Owner]++
		}
		return n
	}
	if n := count(); n["worker-0"] != 4 || n["worker-1"] != 4 || n["worker-2"] != 4 {
		t.Fatalf("leases %v, want 4 each", n)
	}
	// worker-2 dies (stops renewing). Survivors renew theirs and take its shards once expired.
	for round := 0; round < 6; round++ {
		for i := 0; i < 2; i++ {
			clocks[i].Advance(testFailover / 4)
			renew(i)
			pass(t, stores[i], statuses[i])
		}
	}
	n := count()
	if n["worker-2"] != 0 || n["worker-0"] != 6 || n["worker-1"] != 6 {
		t.Fatalf("leases after worker-2 died %v, want 6 and 6", n)
	}
	var expired float64
	for _, s := range stores[:2] {
		expired += testutil.ToFloat64(s.metrics.Handovers.WithLabelValues("expired"))
	}
	if expired != 4 {
		t.Fatalf("%v hand-overs counted as expired, want 4", expired)
	}
}

// TestChildWaitsForEveryParent: a merged shard is not leased until both its parents (the
// library only knows ParentShardId) are at SHARD_END; a parent gone from the stream counts as
// finished; a parent listed but never leased must be processed first.
func TestChildWaitsForEveryParent(t *testing.T) {
	db, table := testTable(t)
	clock := newFakeClock()
	shards := []ShardInfo{{ID: "shardId-000000000000"}, {ID: "shardId-000000000001"},
		{ID: "shardId-000000000002", Parents: []string{"shardId-000000000000", "shardId-000000000001"}}}
	a := leasingStore(t, newStore(t, db, table, "worker-a", clock), shards)
	child := status("shardId-000000000002", "shardId-000000000000")
	p0, p1 := status("shardId-000000000000", ""), status("shardId-000000000001", "")
	wantErr(t, a.GetLease(child, "worker-a"), ErrParentOpen, "child of two unleased parents")
	mustLease(t, a, p0)
	if err := checkpointAt(a, p0, ShardEnd); err != nil {
		t.Fatal(err)
	}
	clock.Advance(testSync)
	wantErr(t, a.GetLease(child, "worker-a"), ErrParentOpen, "child whose adjacent parent is open")
	mustLease(t, a, p1)
	if err := checkpointAt(a, p1, "7"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(testSync)
	wantErr(t, a.GetLease(child, "worker-a"), ErrParentOpen, "child whose adjacent parent is checkpointed but not finished")
	if err := checkpointAt(a, p1, ShardEnd); err != nil {
		t.Fatal(err)
	}
	clock.Advance(testSync)
	mustLease(t, a, child)

	// Parents that left the stream (retention) do not hold a child back.
	b := leasingStore(t, newStore(t, db, table, "worker-b", newFakeClock()), []ShardInfo{{ID: "shardId-000000000009", Parents: []string{"shardId-000000000005"}}})
	mustLease(t, b, status("shardId-000000000009", "shardId-000000000005"))
}

// TestStealingIsRateLimited: a worker that holds fewer than floor(open/workers) claims one
// lease of the busiest worker, at most once per steal interval and only when the difference is
// two or more.
func TestStealingIsRateLimited(t *testing.T) {
	db, table := testTable(t)
	shards := shardIDs(4)
	ca, cb := newFakeClock(), newFakeClock()
	a := leasingStore(t, newStore(t, db, table, "worker-a", ca), shards)
	b := leasingStore(t, newStore(t, db, table, "worker-b", cb), shards)
	sa, sb := statusesOf(shards), statusesOf(shards)
	for range 4 {
		if pass(t, a, sa) == "" {
			t.Fatal("worker-a leased nothing")
		}
	}
	workers, err := b.ListActiveWorkers(sb)
	if err != nil {
		t.Fatal(err)
	}
	if len(workers["worker-a"]) != 4 || len(workers["worker-b"]) != 0 {
		t.Fatalf("ListActiveWorkers = %v, want worker-a's 4 shards to steal from", workers)
	}
	var claimed *par.ShardStatus
	for _, st := range workers["worker-a"] {
		claimed = st
		break
	}
	if err := b.ClaimShard(claimed, "worker-b"); err != nil {
		t.Fatal(err)
	}
	cb.Advance(testSync)
	if workers, err := b.ListActiveWorkers(sb); err != nil || len(workers) != 0 {
		t.Fatalf("ListActiveWorkers right after a claim = %v, %v; want none (one claim per interval)", workers, err)
	}
	if got := testutil.ToFloat64(b.metrics.Claims); got != 1 {
		t.Fatalf("%v claims counted, want 1", got)
	}
	// The holder hands over (its consumer ends and releases); the claimant takes the lease.
	if err := a.RemoveLeaseOwner(claimed.ID); err != nil {
		t.Fatal(err)
	}
	cb.Advance(testSync)
	if got := pass(t, b, sb); got != claimed.ID {
		t.Fatalf("worker-b leased %q after the hand-over, want %s", got, claimed.ID)
	}
	if got := testutil.ToFloat64(b.metrics.Handovers.WithLabelValues("claim")); got != 1 {
		t.Fatalf("%v hand-overs by claim, want 1", got)
	}
	// 3 against 1 (floor 2): one more claim, but only once the steal interval has passed.
	for _, st := range sa {
		if st.GetLeaseOwner() == "worker-a" && st.ID != claimed.ID {
			mustLease(t, a, st) // worker-a is alive: its leases are not expired
		}
	}
	cb.Advance(testSync)
	if workers, err := b.ListActiveWorkers(sb); err != nil || len(workers) != 0 {
		t.Fatalf("3 against 1 within the steal interval: ListActiveWorkers = %v, %v; want none", workers, err)
	}
	cb.Advance(5 * time.Second)
	workers, err = b.ListActiveWorkers(sb)
	if err != nil {
		t.Fatal(err)
	}
	if len(workers["worker-a"]) != 3 || len(workers["worker-b"]) != 1 {
		t.Fatalf("3 against 1 after the steal interval: ListActiveWorkers = %v, want worker-a's 3 and worker-b's 1", workers)
	}
}

// TestStealViewWhileRenewing pins a fatal data race: stealView (ListActiveWorkers, the
// library's event loop) read the lease view's rows map after unlocking while renewals and
// checkpoints (the consumers' goroutines) wrote it, which aborts the process with "concurrent
// map read and map write". Run with -race: the detector flags the unsynchronised read.
func TestStealViewWhileRenewing(t *testing.T) {
	db, table := testTable(t)
	shards := shardIDs(16)
	a := leasingStore(t, newStore(t, db, table, "worker-a", newFakeClock()), shards)
	b := leasingStore(t, newStore(t, db, table, "worker-b", newFakeClock()), shards)
	sa, sb := statusesOf(shards), statusesOf(shards)
	var mine []*par.ShardStatus
	for i, sh := range shards {
		if i%2 == 0 {
			mustLease(t, a, sa[sh.ID]) // rows worker-b's stealView reads
		}
	}
	for i, sh := range shards {
		if i%2 == 1 {
			mustLease(t, b, sb[sh.ID]) // rows worker-b's renewals and checkpoints write
			mine = append(mine, sb[sh.ID])
		}
	}
	const rounds = 20
	errs := make(chan error, len(mine))
	var wg sync.WaitGroup
	for _, st := range mine {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				if err := b.Renew(st); err != nil {
					errs <- fmt.Errorf("renew %s: %w", st.ID, err)
					return
				}
				if err := checkpointAt(b, st, fmt.Sprintf("49%038d", i+1)); err != nil {
					errs <- fmt.Errorf("checkpoint %s: %w", st.ID, err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		if _, err := b.ListActiveWorkers(sb); err != nil {
			t.Fatalf("list active workers: %v", err)
		}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The view still shows worker-a's leases to worker-b's event loop.
	for i, sh := range shards {
		if i%2 == 0 {
			if got := sb[sh.ID].GetLeaseOwner(); got != "worker-a" {
				t.Errorf("%s: owner %q in worker-b's status, want worker-a", sh.ID, got)
			}
		}
	}
}
