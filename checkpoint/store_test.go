package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"

	"github.com/recstream/recstream/checkpoint/checkpointtest"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/stacktest"
)

const testFailover = 10 * time.Second

// fakeClock is the tests' hand-advanced monotonic clock.
type fakeClock = checkpointtest.Clock

func newFakeClock() *fakeClock { return checkpointtest.NewClock(time.Unix(1_000_000, 0)) }

// testTable returns a DynamoDB client for the local dynalite and a fresh table name whose
// table is deleted when the test ends.
func testTable(t *testing.T, opts ...awsenv.Option) (*dynamodb.Client, string) {
	t.Helper()
	return checkpointtest.Table(t, "ckpt-test-", opts...)
}

type storeOpt func(*Config)

func newStore(t *testing.T, db *dynamodb.Client, table, worker string, clock *fakeClock, opts ...storeOpt) *Store {
	t.Helper()
	cfg := Config{Table: table, WorkerID: worker, FailoverTime: testFailover, Now: clock.Now}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	return s
}

func status(id, parent string) *par.ShardStatus {
	return &par.ShardStatus{ID: id, ParentShardId: parent, Mux: &sync.RWMutex{}, StartingSequenceNumber: "49000000000000000000"}
}

func row(t *testing.T, s *Store, shardID string) Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, ok, err := s.getLease(ctx, shardID)
	if err != nil || !ok {
		t.Fatalf("read row %s: ok=%v err=%v", shardID, ok, err)
	}
	return l
}

func mustLease(t *testing.T, s *Store, st *par.ShardStatus) {
	t.Helper()
	if err := s.GetLease(st, s.WorkerID()); err != nil {
		t.Fatalf("%s GetLease(%s): %v", s.WorkerID(), st.ID, err)
	}
}

func checkpointAt(s *Store, st *par.ShardStatus, seq string) error {
	st.SetCheckpoint(seq)
	return s.CheckpointSequence(st)
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
	if !errors.As(err, &chk.ErrLeaseNotAcquired{}) {
		t.Fatalf("%s: %v does not match the library's ErrLeaseNotAcquired", what, err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Table: "leases", WorkerID: "w1", FailoverTime: 10 * time.Second}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantKey string
	}{
		{"valid", func(*Config) {}, ""},
		{"empty table", func(c *Config) { c.Table = "" }, "table:"},
		{"short table", func(c *Config) { c.Table = "ab" }, "table:"},
		{"empty worker", func(c *Config) { c.WorkerID = "" }, "worker_id:"},
		{"failover too small", func(c *Config) { c.FailoverTime = 500 * time.Millisecond }, "failover_time:"},
		{"call timeout not below failover", func(c *Config) { c.CallTimeout = 10 * time.Second }, "call_timeout:"},
		{"negative create timeout", func(c *Config) { c.CreateTimeout = -1 }, "create_timeout:"},
		{"negative page size", func(c *Config) { c.ScanPageSize = -1 }, "scan_page_size:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || len(err.Error()) < len(tc.wantKey) || err.Error()[:len(tc.wantKey)] != tc.wantKey {
				t.Fatalf("Validate: got %v, want an error starting with %q", err, tc.wantKey)
			}
		})
	}
	if _, err := New(ok, nil); err == nil {
		t.Fatal("New with nil client: want error")
	}
}

func TestParseLeaseRejectsWrongTypes(t *testing.T) {
	tests := []struct {
		name string
		item map[string]types.AttributeValue
		want string
	}{
		{"missing key", map[string]types.AttributeValue{}, "ShardID"},
		{"owner not S", map[string]types.AttributeValue{AttrShardID: &types.AttributeValueMemberS{Value: "s"}, AttrOwner: &types.AttributeValueMemberN{Value: "1"}}, "AssignedTo"},
		{"counter not N", map[string]types.AttributeValue{AttrShardID: &types.AttributeValueMemberS{Value: "s"}, AttrCounter: &types.AttributeValueMemberS{Value: "1"}}, "LeaseCounter"},
		{"counter not integer", map[string]types.AttributeValue{AttrShardID: &types.AttributeValueMemberS{Value: "s"}, AttrCounter: &types.AttributeValueMemberN{Value: "1.5"}}, "LeaseCounter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseLease(tc.item)
			if err == nil || !contains(err.Error(), tc.want) {
				t.Fatalf("parseLease: got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestInitCreatesOnDemandTable(t *testing.T) {
	db, table := testTable(t)
	s := newStore(t, db, table, "w1", newFakeClock())
	if err := s.Init(); err != nil { // idempotent
		t.Fatalf("second Init: %v", err)
	}
	out, err := db.DescribeTable(context.Background(), &dynamodb.DescribeTableInput{TableName: aws.String(table)})
	if err != nil {
		t.Fatal(err)
	}
	if out.Table.TableStatus != types.TableStatusActive {
		t.Fatalf("table status %s, want ACTIVE", out.Table.TableStatus)
	}
	if out.Table.BillingModeSummary == nil || out.Table.BillingModeSummary.BillingMode != types.BillingModePayPerRequest {
		t.Fatalf("billing mode summary %+v, want PAY_PER_REQUEST", out.Table.BillingModeSummary)
	}
	if k := out.Table.KeySchema; len(k) != 1 || aws.ToString(k[0].AttributeName) != AttrShardID {
		t.Fatalf("key schema %+v, want hash key %s", k, AttrShardID)
	}
}

func TestAcquireRenewAndExpiryOnLocalClock(t *testing.T) {
	db, table := testTable(t)
	ca, cb := newFakeClock(), newFakeClock()
	a := newStore(t, db, table, "worker-a", ca)
	b := newStore(t, db, table, "worker-b", cb)

	sa, sb := status("shard-0", ""), status("shard-0", "")
	mustLease(t, a, sa)
	if got := sa.GetLeaseOwner(); got != "worker-a" {
		t.Fatalf("status owner %q after acquire", got)
	}
	until, ok := a.HeldUntil("shard-0")
	if !ok || !until.Equal(ca.Now().Add(testFailover)) {
		t.Fatalf("HeldUntil = %v, %v; want %v, true", until, ok, ca.Now().Add(testFailover))
	}
	wantErr(t, b.GetLease(sb, "worker-b"), ErrLeaseHeld, "B acquires a live lease")

	// A renews while B's clock runs: B's clock restarts every time it sees the counter move.
	for i := 0; i < 3; i++ {
		cb.Advance(testFailover - time.Millisecond)
		ca.Advance(testFailover - time.Millisecond)
		mustLease(t, a, sa) // renew
		wantErr(t, b.GetLease(sb, "worker-b"), ErrLeaseHeld, "B acquires a renewed lease")
	}
	if got := row(t, a, "shard-0").Counter; got != 4 {
		t.Fatalf("counter %d after 1 acquire + 3 renewals, want 4", got)
	}
	// A's wall-clock LeaseTimeout in the table is irrelevant: B judges by its own clock only.
	cb.Advance(testFailover - time.Millisecond)
	wantErr(t, b.GetLease(sb, "worker-b"), ErrLeaseHeld, "B acquires 1ms before expiry")
	cb.Advance(time.Millisecond)
	mustLease(t, b, sb)

	wantErr(t, a.GetLease(sa, "worker-a"), ErrLeaseLost, "A renews a lease B took")
	if _, ok := a.HeldUntil("shard-0"); ok {
		t.Fatal("A's HeldUntil still reports the lease after losing it")
	}
	if l := row(t, a, "shard-0"); l.Owner != "worker-b" || l.Counter != 5 {
		t.Fatalf("row %+v, want owner worker-b counter 5", l)
	}
}

func TestExpiryBoundary(t *testing.T) {
	db, table := testTable(t)
	tests := []struct {
		name      string
		advance   time.Duration
		wantTaken bool
	}{
		{"not seen before", 0, false},
		{"half failover", testFailover / 2, false},
		{"just under failover", testFailover - time.Nanosecond, false},
		{"exactly failover", testFailover, true},
		{"well past failover", 3 * testFailover, true},
	}
	a := newStore(t, db, table, "worker-a", newFakeClock())
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("shard-%d", i)
			mustLease(t, a, status(id, ""))
			cb := newFakeClock()
			b := newStore(t, db, table, "worker-b", cb)
			st := status(id, "")
			if err := b.FetchCheckpoint(st); !errors.Is(err, chk.ErrSequenceIDNotFound) {
				t.Fatalf("FetchCheckpoint of a row without checkpoint: %v", err)
			}
			cb.Advance(tc.advance)
			err := b.GetLease(st, "worker-b")
			if tc.wantTaken != (err == nil) {
				t.Fatalf("GetLease after %s: err=%v, want taken=%v", tc.advance, err, tc.wantTaken)
			}
		})
	}
}

func TestFencingLostLeaseCannotWrite(t *testing.T) {
	db, table := testTable(t)
	ca, cb := newFakeClock(), newFakeClock()
	a := newStore(t, db, table, "worker-a", ca)
	b := newStore(t, db, table, "worker-b", cb)
	sa, sb := status("shard-0", "parent-0"), status("shard-0", "parent-0")
	mustLease(t, a, sa)
	if err := checkpointAt(a, sa, "100"); err != nil {
		t.Fatalf("A checkpoint: %v", err)
	}
	// A stalls (GC pause, partition): B sees the counter frozen for the failover time.
	wantErr(t, b.GetLease(sb, "worker-b"), ErrLeaseHeld, "B before expiry")
	cb.Advance(testFailover)
	mustLease(t, b, sb)
	if got := sb.GetCheckpoint(); got != "100" {
		t.Fatalf("B starts at checkpoint %q, want 100", got)
	}
	if err := checkpointAt(b, sb, "200"); err != nil {
		t.Fatalf("B checkpoint: %v", err)
	}
	// A wakes up and still believes it holds the lease.
	wantErr(t, checkpointAt(a, sa, "150"), ErrLeaseLost, "A checkpoints after losing the lease")
	wantErr(t, checkpointAt(a, sa, "160"), ErrLeaseLost, "A checkpoints again")
	wantErr(t, a.GetLease(sa, "worker-a"), ErrLeaseHeld, "A re-acquires B's live lease")
	wantErr(t, a.RemoveLeaseOwner("shard-0"), ErrLeaseLost, "A releases B's lease")
	l := row(t, a, "shard-0")
	if l.Owner != "worker-b" || l.Checkpoint != "200" || l.ParentShardID != "parent-0" {
		t.Fatalf("row %+v: B's lease or checkpoint was overwritten", l)
	}
	if err := checkpointAt(b, sb, "300"); err != nil {
		t.Fatalf("B checkpoint after A's attempts: %v", err)
	}
}

// countScans counts Scan requests sent by a client.
func countScans(n *atomic.Int64) awsenv.Option {
	return func(cfg *aws.Config) {
		cfg.APIOptions = append(cfg.APIOptions, func(stack *middleware.Stack) error {
			return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("countScans",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					if awsmiddleware.GetOperationName(ctx) == "Scan" {
						n.Add(1)
					}
					return next.HandleInitialize(ctx, in)
				}), middleware.After)
		})
	}
}

func TestListLeasesPaginates(t *testing.T) {
	var scans atomic.Int64
	db, table := testTable(t, countScans(&scans))
	clock := newFakeClock()
	a := newStore(t, db, table, "worker-a", clock, func(c *Config) { c.ScanPageSize = 2 })
	const n = 9
	statuses := map[string]*par.ShardStatus{}
	for i := 0; i < n; i++ {
		st := status(fmt.Sprintf("shard-%02d", i), "")
		statuses[st.ID] = st
		mustLease(t, a, st)
	}
	scans.Store(0)
	leases, err := a.ListLeases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != n {
		t.Fatalf("ListLeases returned %d leases, want %d", len(leases), n)
	}
	for i, l := range leases {
		if want := fmt.Sprintf("shard-%02d", i); l.ShardID != want || l.Owner != "worker-a" || l.Counter != 1 {
			t.Fatalf("lease %d = %+v, want %s owned by worker-a with counter 1", i, l, want)
		}
	}
	if got := scans.Load(); got < (n+1)/2 {
		t.Fatalf("%d Scan requests, want >= %d pages of 2", got, (n+1)/2)
	}
	workers, err := a.ListActiveWorkers(statuses)
	if err != nil {
		t.Fatal(err)
	}
	if len(workers) != 1 || len(workers["worker-a"]) != n {
		t.Fatalf("ListActiveWorkers = %v, want worker-a with %d shards", workers, n)
	}
}

func TestShardEndAndParentProbe(t *testing.T) {
	db, table := testTable(t)
	a := newStore(t, db, table, "worker-a", newFakeClock())
	b := newStore(t, db, table, "worker-b", newFakeClock())
	parent, child := status("parent", ""), status("child", "parent")
	probe := &par.ShardStatus{ID: "parent", Mux: &sync.RWMutex{}} // what the library's waitOnParentShard passes

	if err := b.FetchCheckpoint(probe); !errors.Is(err, chk.ErrSequenceIDNotFound) {
		t.Fatalf("probe of a parent without row: %v, want ErrSequenceIDNotFound", err)
	}
	mustLease(t, a, parent)
	mustLease(t, b, child)
	// Regression (library waitOnParentShard): a leased parent without checkpoint used to look
	// "deleted", letting the child start before the parent was finished.
	if err := b.FetchCheckpoint(probe); err != nil || probe.GetCheckpoint() != "" {
		t.Fatalf("probe of an unfinished parent: err=%v checkpoint=%q, want nil and empty", err, probe.GetCheckpoint())
	}
	if err := checkpointAt(a, parent, "500"); err != nil {
		t.Fatal(err)
	}
	if err := b.FetchCheckpoint(probe); err != nil || probe.GetCheckpoint() != "500" {
		t.Fatalf("probe: err=%v checkpoint=%q, want 500", err, probe.GetCheckpoint())
	}
	if err := checkpointAt(a, parent, ShardEnd); err != nil { // the processor's Checkpoint(nil)
		t.Fatalf("SHARD_END checkpoint: %v", err)
	}
	if err := b.FetchCheckpoint(probe); err != nil || probe.GetCheckpoint() != ShardEnd {
		t.Fatalf("probe: err=%v checkpoint=%q, want SHARD_END", err, probe.GetCheckpoint())
	}
	workers, err := b.ListActiveWorkers(map[string]*par.ShardStatus{"parent": status("parent", ""), "child": status("child", "parent")})
	if err != nil {
		t.Fatal(err)
	}
	if len(workers) != 1 || len(workers["worker-b"]) != 1 {
		t.Fatalf("ListActiveWorkers = %v, want only worker-b's child (finished parent excluded)", workers)
	}
	leases, err := b.ListLeases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 2 || !leases[1].Closed() || leases[1].ShardID != "parent" || leases[0].ParentShardID != "parent" {
		t.Fatalf("leases %+v, want closed parent and child with ParentShardID", leases)
	}
	if err := a.RemoveLeaseInfo("child"); err == nil {
		t.Fatal("RemoveLeaseInfo deleted a live, unfinished lease")
	}
	if err := a.RemoveLeaseInfo("parent"); err != nil {
		t.Fatalf("RemoveLeaseInfo of a finished shard: %v", err)
	}
	if _, err := a.GetLeaseOwner("parent"); !errors.Is(err, chk.NoLeaseOwnerErr) {
		t.Fatalf("GetLeaseOwner of a removed row: %v", err)
	}
	if owner, err := a.GetLeaseOwner("child"); err != nil || owner != "worker-b" {
		t.Fatalf("GetLeaseOwner(child) = %q, %v", owner, err)
	}
}

func TestReleaseHandsOverAtOnce(t *testing.T) {
	db, table := testTable(t)
	a := newStore(t, db, table, "worker-a", newFakeClock())
	b := newStore(t, db, table, "worker-b", newFakeClock())
	sa, sb := status("shard-0", ""), status("shard-0", "")
	mustLease(t, a, sa)
	if err := checkpointAt(a, sa, "42"); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveLeaseOwner("shard-0"); err != nil {
		t.Fatalf("release: %v", err)
	}
	if _, ok := a.HeldUntil("shard-0"); ok {
		t.Fatal("HeldUntil reports a released lease")
	}
	if l := row(t, a, "shard-0"); l.Owner != "" || l.Checkpoint != "42" || l.Counter != 3 {
		t.Fatalf("row after release %+v, want free, checkpoint 42, counter 3", l)
	}
	if err := b.FetchCheckpoint(sb); err != nil || sb.GetLeaseOwner() != "" {
		t.Fatalf("FetchCheckpoint: err=%v owner=%q", err, sb.GetLeaseOwner())
	}
	mustLease(t, b, sb) // no failover wait for a released lease
	wantErr(t, checkpointAt(a, sa, "43"), ErrLeaseLost, "checkpoint after release")
	wantErr(t, a.RemoveLeaseOwner("shard-0"), ErrLeaseLost, "second release")
	if l := row(t, a, "shard-0"); l.Owner != "worker-b" || l.Checkpoint != "42" {
		t.Fatalf("row %+v, want worker-b at 42", l)
	}
}

func TestConcurrentAcquireHasOneWinner(t *testing.T) {
	db, table := testTable(t)
	seed := newStore(t, db, table, "worker-seed", newFakeClock())
	tests := []struct {
		name    string
		prepare func(t *testing.T, id string) // leaves the row in the state to race on
		advance time.Duration                 // racers' clocks, after one observation
	}{
		{"new row", func(*testing.T, string) {}, 0},
		{"released row", func(t *testing.T, id string) {
			mustLease(t, seed, status(id, ""))
			if err := seed.RemoveLeaseOwner(id); err != nil {
				t.Fatal(err)
			}
		}, 0},
		{"expired row", func(t *testing.T, id string) { mustLease(t, seed, status(id, "")) }, testFailover},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for round := 0; round < 4; round++ {
				id := stacktest.UniqueName("shard-")
				tc.prepare(t, id)
				clocks := []*fakeClock{newFakeClock(), newFakeClock()}
				stores := []*Store{newStore(t, db, table, "racer-0", clocks[0]), newStore(t, db, table, "racer-1", clocks[1])}
				statuses := []*par.ShardStatus{status(id, ""), status(id, "")}
				for i, s := range stores {
					if err := s.FetchCheckpoint(statuses[i]); err != nil && !errors.Is(err, chk.ErrSequenceIDNotFound) {
						t.Fatal(err)
					}
					clocks[i].Advance(tc.advance)
				}
				errs := make([]error, 2)
				var start, done sync.WaitGroup
				start.Add(1)
				for i := range stores {
					done.Add(1)
					go func() {
						defer done.Done()
						start.Wait()
						errs[i] = stores[i].GetLease(statuses[i], stores[i].WorkerID())
					}()
				}
				start.Done()
				done.Wait()
				winners := 0
				var winner string
				for i, err := range errs {
					if err == nil {
						winners++
						winner = stores[i].WorkerID()
					} else if !errors.Is(err, ErrLeaseHeld) {
						t.Fatalf("loser's error %v, want ErrLeaseHeld", err)
					}
				}
				if winners != 1 {
					t.Fatalf("round %d: %d winners (errors %v), want exactly 1", round, winners, errs)
				}
				if l := row(t, seed, id); l.Owner != winner {
					t.Fatalf("row owner %q, winner %q", l.Owner, winner)
				}
			}
		})
	}
}

func TestClaimHandsOverPolitely(t *testing.T) {
	db, table := testTable(t)
	a := newStore(t, db, table, "worker-a", newFakeClock())
	b := newStore(t, db, table, "worker-b", newFakeClock())
	c := newStore(t, db, table, "worker-c", newFakeClock())
	all := func() map[string]*par.ShardStatus {
		return map[string]*par.ShardStatus{"s0": status("s0", ""), "s1": status("s1", "")}
	}
	sa := status("s0", "")
	mustLease(t, a, sa)
	if _, err := c.ListActiveWorkers(all()); !errors.Is(err, chk.ErrShardNotAssigned) {
		t.Fatalf("ListActiveWorkers with a free shard: %v, want ErrShardNotAssigned", err)
	}
	mustLease(t, a, status("s1", ""))

	sc := status("s0", "")
	if err := c.ClaimShard(sc, "worker-c"); err != nil {
		t.Fatalf("claim: %v", err)
	}
	if err := b.ClaimShard(status("s0", ""), "worker-b"); err == nil {
		t.Fatal("second claim on a claimed shard succeeded")
	}
	workers, err := b.ListActiveWorkers(all())
	if err != nil {
		t.Fatal(err)
	}
	if len(workers["worker-a"]) != 1 || len(workers["worker-c"]) != 1 {
		t.Fatalf("ListActiveWorkers = %v, want the claimed shard counted for worker-c", workers)
	}
	// The holder keeps its lease until it lets go: nobody takes it early.
	wantErr(t, c.GetLease(sc, "worker-c"), ErrLeaseHeld, "claimant takes an unreleased lease")
	wantErr(t, a.GetLease(sa, "worker-a"), ErrLeaseClaimed, "holder renews a claimed lease")
	if _, ok := a.HeldUntil("s0"); !ok {
		t.Fatal("claimed but unreleased lease: HeldUntil must still hold")
	}
	if err := checkpointAt(a, sa, "7"); err != nil {
		t.Fatalf("holder's checkpoint while claimed: %v", err)
	}
	if err := a.RemoveLeaseOwner("s0"); err != nil {
		t.Fatal(err)
	}
	sb := status("s0", "")
	wantErr(t, b.GetLease(sb, "worker-b"), ErrLeaseClaimed, "third worker takes a lease claimed by another")
	mustLease(t, c, sc)
	if l := row(t, c, "s0"); l.Owner != "worker-c" || l.ClaimRequest != "" || l.Checkpoint != "7" {
		t.Fatalf("row %+v, want worker-c, claim cleared, checkpoint 7", l)
	}
}

func TestSameWorkerIDAfterRestartWaitsForExpiry(t *testing.T) {
	db, table := testTable(t)
	old := newStore(t, db, table, "worker-a", newFakeClock())
	mustLease(t, old, status("s0", ""))
	clock := newFakeClock()
	restarted := newStore(t, db, table, "worker-a", clock)
	st := status("s0", "")
	if err := restarted.FetchCheckpoint(st); !errors.Is(err, chk.ErrSequenceIDNotFound) {
		t.Fatal(err)
	}
	// Reporting our own name would make the library skip the shard forever.
	if got := st.GetLeaseOwner(); got != "" {
		t.Fatalf("status owner %q for a row under our name we do not hold, want empty", got)
	}
	wantErr(t, restarted.GetLease(st, "worker-a"), ErrLeaseHeld, "restarted worker before expiry")
	clock.Advance(testFailover)
	mustLease(t, restarted, st)
	wantErr(t, checkpointAt(old, status("s0", ""), "1"), ErrLeaseLost, "old incarnation checkpoints")
}

// lostResponses makes the next UpdateItem's response look lost after DynamoDB committed it,
// so the SDK retries a write that already happened.
type lostResponses struct{ armed atomic.Bool }

type retryableErr struct{}

func (retryableErr) Error() string        { return "connection reset after request was sent" }
func (retryableErr) RetryableError() bool { return true }

func (l *lostResponses) option(cfg *aws.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(stack *middleware.Stack) error {
		return stack.Deserialize.Add(middleware.DeserializeMiddlewareFunc("loseResponse",
			func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
				out, md, err := next.HandleDeserialize(ctx, in)
				if err == nil && awsmiddleware.GetOperationName(ctx) == "UpdateItem" && l.armed.CompareAndSwap(true, false) {
					return out, md, retryableErr{}
				}
				return out, md, err
			}), middleware.Before)
	})
}

func TestSDKRetryOfCommittedWriteIsNotLeaseLoss(t *testing.T) {
	var lose lostResponses
	db, table := testTable(t, lose.option)
	a := newStore(t, db, table, "worker-a", newFakeClock())
	st := status("s0", "")
	mustLease(t, a, st)
	for _, op := range []string{"renew", "checkpoint"} {
		lose.armed.Store(true)
		var err error
		if op == "renew" {
			err = a.GetLease(st, "worker-a")
		} else {
			err = checkpointAt(a, st, "99")
		}
		if err != nil {
			t.Fatalf("%s whose first response was lost: %v", op, err)
		}
		if lose.armed.Load() {
			t.Fatalf("%s: the fault was not injected", op)
		}
	}
	if l := row(t, a, "s0"); l.Counter != 3 || l.Checkpoint != "99" {
		t.Fatalf("row %+v, want counter 3 checkpoint 99", l)
	}
	if err := checkpointAt(a, st, "100"); err != nil {
		t.Fatalf("checkpoint after retries: %v", err)
	}
}

// failAfterCommit makes the next UpdateItem return a non-retryable error after DynamoDB
// committed it (a timeout the SDK gives up on).
type failAfterCommit struct{ armed atomic.Bool }

func (f *failAfterCommit) option(cfg *aws.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(stack *middleware.Stack) error {
		return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("failAfterCommit",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				out, md, err := next.HandleFinalize(ctx, in)
				if err == nil && awsmiddleware.GetOperationName(ctx) == "UpdateItem" && f.armed.CompareAndSwap(true, false) {
					return out, md, errors.New("request timed out")
				}
				return out, md, err
			}), middleware.Before)
	})
}

func TestAmbiguousCheckpointFailureIsAdoptedByNextRenewal(t *testing.T) {
	var fail failAfterCommit
	db, table := testTable(t, fail.option)
	clock := newFakeClock()
	a := newStore(t, db, table, "worker-a", clock)
	st := status("s0", "")
	mustLease(t, a, st)
	before, _ := a.HeldUntil("s0")
	clock.Advance(time.Second)
	fail.armed.Store(true)
	if err := checkpointAt(a, st, "5"); err == nil || errors.Is(err, ErrLeaseLost) {
		t.Fatalf("checkpoint with a lost response: %v, want a plain error", err)
	}
	if until, _ := a.HeldUntil("s0"); !until.Equal(before) {
		t.Fatalf("HeldUntil moved to %v on an ambiguous write, want %v", until, before)
	}
	mustLease(t, a, st) // renew: adopts the committed counter instead of reporting a loss
	if err := checkpointAt(a, st, "6"); err != nil {
		t.Fatalf("checkpoint after adoption: %v", err)
	}
	if l := row(t, a, "s0"); l.Counter != 4 || l.Checkpoint != "6" {
		t.Fatalf("row %+v, want counter 4 checkpoint 6", l)
	}
}

func TestAmbiguousCheckpointFailureThenCheckpoint(t *testing.T) {
	var fail failAfterCommit
	db, table := testTable(t, fail.option)
	clock := newFakeClock()
	a := newStore(t, db, table, "worker-a", clock)
	st := status("s0", "")
	mustLease(t, a, st)
	before, _ := a.HeldUntil("s0")
	clock.Advance(time.Second)
	fail.armed.Store(true)
	if err := checkpointAt(a, st, "5"); err == nil || errors.Is(err, ErrLeaseLost) {
		t.Fatalf("checkpoint with a lost response: %v, want a plain error", err)
	}
	clock.Advance(time.Second)
	if err := checkpointAt(a, st, "6"); err != nil {
		t.Fatalf("checkpoint after an ambiguous one: %v", err)
	}
	if until, _ := a.HeldUntil("s0"); !until.Equal(before.Add(2 * time.Second)) {
		t.Fatalf("HeldUntil %v, want %v (renewed by the retried checkpoint)", until, before.Add(2*time.Second))
	}
	if l := row(t, a, "s0"); l.Counter != 3 || l.Checkpoint != "6" {
		t.Fatalf("row %+v, want counter 3 (acquire, ambiguous checkpoint, retried checkpoint) at 6", l)
	}
}
