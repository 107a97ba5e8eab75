package checkpoint

import (
	"context"
	"sync"
	"testing"
	"time"

	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
)

// coordinating sets s up as Coordinate does, without its loop: the tests drive the leader's
// plan, the presence writes and the hand-off by hand.
func coordinating(s *Store, shards []ShardInfo, leader bool) {
	s.SetShards(shards)
	s.mu.Lock()
	s.coord.on, s.coord.leader = true, leader
	s.coord.watch = map[string]time.Time{}
	s.coord.claimSeen = map[string]claimSighting{}
	s.coord.leaderSt = &par.ShardStatus{ID: LeaderRow, Mux: &sync.RWMutex{}}
	s.mu.Unlock()
}

func claimsFor(t *testing.T, s *Store, worker string) []string {
	t.Helper()
	leases, err := s.ListLeases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range leases {
		if IsShardRow(l.ShardID) && l.ClaimRequest == worker {
			ids = append(ids, l.ShardID)
		}
	}
	return ids
}

// TestLeaderPlansForIdleWorker: a worker that holds no lease is invisible to the leader until
// its presence row shows it; then the leader balances leases to it.
func TestLeaderPlansForIdleWorker(t *testing.T) {
	db, table := testTable(t)
	ctx := context.Background()
	shards := []ShardInfo{{ID: "s0"}, {ID: "s1"}, {ID: "s2"}, {ID: "s3"}}
	lead := newStore(t, db, table, "lead", newFakeClock())
	idle := newStore(t, db, table, "idle", newFakeClock())
	coordinating(lead, shards, true)
	coordinating(idle, shards, false)
	for _, sh := range shards {
		mustLease(t, lead, status(sh.ID, ""))
	}
	if err := lead.plan(ctx); err != nil {
		t.Fatal(err)
	}
	if got := claimsFor(t, lead, "idle"); len(got) != 0 {
		t.Fatalf("claims for a worker the leader cannot know of: %v", got)
	}
	idle.keepPresence(ctx)
	if err := lead.plan(ctx); err != nil {
		t.Fatal(err)
	}
	if got := claimsFor(t, lead, "idle"); len(got) != 2 {
		t.Fatalf("after the idle worker's presence row: claims for it %v, want 2 of the leader's 4 leases", got)
	}
}

// TestDrainingWorkerIsGivenNothing: once a worker's presence row says draining, the leader
// claims what it still holds for live workers and withdraws or moves the claims naming it.
func TestDrainingWorkerIsGivenNothing(t *testing.T) {
	db, table := testTable(t)
	ctx := context.Background()
	var shards []ShardInfo
	for _, id := range []string{"s0", "s1", "s2", "s3", "s4", "s5"} {
		shards = append(shards, ShardInfo{ID: id})
	}
	lead := newStore(t, db, table, "lead", newFakeClock())
	a := newStore(t, db, table, "a", newFakeClock())
	b := newStore(t, db, table, "b", newFakeClock())
	coordinating(lead, shards, true)
	coordinating(a, shards, false)
	coordinating(b, shards, false)
	for i, s := range []*Store{lead, lead, a, a, b, b} {
		mustLease(t, s, status(shards[i].ID, ""))
		s.keepPresence(ctx)
	}
	// An earlier balancing pass claimed one of a's leases for b.
	if err := lead.claimFor(ctx, row(t, lead, "s2"), "b"); err != nil {
		t.Fatal(err)
	}
	b.markDraining(ctx)
	if err := lead.plan(ctx); err != nil {
		t.Fatal(err)
	}
	if got := claimsFor(t, lead, "b"); len(got) != 0 {
		t.Fatalf("claims still naming the draining worker: %v", got)
	}
	if l := row(t, lead, "s2"); l.ClaimRequest != "" {
		t.Errorf("s2: claim %q; want the claim for b withdrawn (lead and a hold two each)", l.ClaimRequest)
	}
	for _, id := range []string{"s4", "s5"} {
		if l := row(t, lead, id); l.Owner != "b" || (l.ClaimRequest != "a" && l.ClaimRequest != "lead") {
			t.Errorf("%s: owner %q claim %q; want b's lease claimed for a live worker", id, l.Owner, l.ClaimRequest)
		}
	}
}

// TestHandOffPassesOnWhatNamesTheDrainer: a draining worker claims its leases for the least
// loaded live workers (an idle one known by its presence row first) and passes on the claims
// and transfers that name it, which it will never take.
func TestHandOffPassesOnWhatNamesTheDrainer(t *testing.T) {
	db, table := testTable(t)
	ctx := context.Background()
	shards := []ShardInfo{{ID: "s0"}, {ID: "s1"}, {ID: "s2"}, {ID: "s3"}}
	a := newStore(t, db, table, "a", newFakeClock())
	b := newStore(t, db, table, "b", newFakeClock())
	c := newStore(t, db, table, "c", newFakeClock())
	for _, s := range []*Store{a, b, c} {
		coordinating(s, shards, false)
	}
	mustLease(t, a, status("s0", ""))
	mustLease(t, a, status("s1", ""))
	mustLease(t, b, status("s2", ""))
	c.keepPresence(ctx) // c holds nothing
	if err := a.claimFor(ctx, row(t, a, "s0"), "b"); err != nil {
		t.Fatal(err)
	}
	if err := a.transfer(ctx, "s3", Lease{}, false, "b"); err != nil { // planned for b, not adopted yet
		t.Fatal(err)
	}
	if d := b.HandOff(ctx); d <= 0 {
		t.Fatalf("HandOff returned %s, want the hand-over delay", d)
	}
	if l := row(t, a, "s2"); l.Owner != "b" || l.ClaimRequest != "c" {
		t.Errorf("b's own lease s2: owner %q claim %q, want claimed for the idle c", l.Owner, l.ClaimRequest)
	}
	if l := row(t, a, "s0"); l.Owner != "a" || l.ClaimRequest != "c" {
		t.Errorf("s0 (a's, claimed for b): owner %q claim %q, want the claim passed to c", l.Owner, l.ClaimRequest)
	}
	if l := row(t, a, "s3"); l.Owner != "a" || l.ClaimRequest != "a" {
		t.Errorf("s3 (transferred to b): owner %q claim %q, want transferred to a (c has two by now)", l.Owner, l.ClaimRequest)
	}
	if l := row(t, a, WorkerRowPrefix+"b"); l.State != stateDraining {
		t.Errorf("b's presence row: state %q, want draining", l.State)
	}
	b.Retire(ctx)
	leases, err := a.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if l.ShardID == WorkerRowPrefix+"b" {
			t.Errorf("b's presence row survived Retire: %+v", l)
		}
	}
}

// TestLeaderRemovesPresenceOfWorkersGone: a presence row that has not moved for FailoverTime
// (on the leader's clock), of a worker that holds no lease, is deleted; a fresh one is kept.
func TestLeaderRemovesPresenceOfWorkersGone(t *testing.T) {
	db, table := testTable(t)
	ctx := context.Background()
	clock := newFakeClock()
	shards := []ShardInfo{{ID: "s0"}}
	lead := newStore(t, db, table, "lead", clock)
	gone := newStore(t, db, table, "gone", newFakeClock())
	here := newStore(t, db, table, "here", clock)
	coordinating(lead, shards, true)
	coordinating(gone, shards, false)
	coordinating(here, shards, false)
	mustLease(t, lead, status("s0", "")) // nothing to plan: no transfer to either
	gone.keepPresence(ctx)
	here.keepPresence(ctx)
	if err := lead.plan(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(testFailover + time.Second)
	here.keepPresence(ctx) // due again: it holds no shard lease
	if err := lead.plan(ctx); err != nil {
		t.Fatal(err)
	}
	leases, err := lead.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, l := range leases {
		got[l.ShardID] = true
	}
	if got[WorkerRowPrefix+"gone"] || !got[WorkerRowPrefix+"here"] {
		t.Fatalf("rows %v: want gone's presence removed and here's kept", got)
	}
}

// TestTransferDoesNotMakeDeadWorkerLive: a lease the leader transferred to a worker that never
// adopts it is no sign of that worker's life: the leader transfers it again to a live worker,
// never to another dead one (each dead worker looked live on the transfers it never took, and
// a 1,000-shard failover passed the same leases between dead workers for minutes).
func TestTransferDoesNotMakeDeadWorkerLive(t *testing.T) {
	db, table := testTable(t)
	ctx := context.Background()
	clock := newFakeClock()
	shards := []ShardInfo{{ID: "s0"}, {ID: "s1"}, {ID: "s2"}, {ID: "s3"}, {ID: "s4"}, {ID: "s5"}}
	lead := newStore(t, db, table, "lead", clock)
	coordinating(lead, shards, true)
	for _, id := range []string{"s0", "s1", "s2", "s3"} {
		mustLease(t, lead, status(id, ""))
	}
	// s4 and s5 were transferred to two workers that died before adopting them.
	if err := lead.transfer(ctx, "s4", Lease{}, false, "dead1"); err != nil {
		t.Fatal(err)
	}
	if err := lead.transfer(ctx, "s5", Lease{}, false, "dead2"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := lead.plan(ctx); err != nil {
			t.Fatal(err)
		}
		clock.Advance(testFailover/2 + time.Second)
		for _, id := range []string{"s0", "s1", "s2", "s3"} { // the leader's own leases, renewed
			if err := lead.GetLease(status(id, ""), "lead"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range []string{"s4", "s5"} {
		if l := row(t, lead, id); l.Owner != "lead" || l.ClaimRequest != "lead" {
			t.Errorf("%s: owner %q claim %q; want the unadopted transfer given to the live leader", id, l.Owner, l.ClaimRequest)
		}
	}
}
