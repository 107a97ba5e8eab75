package checkpoint

import (
	"context"
	"testing"
	"time"
)

// TestFollowerObservesWhenLeaderStalls: a follower that finds the leader row unmoved since its
// last check reads the whole table, so that when it takes the lead its plan finds the leases
// of workers that died with the leader expired FailoverTime after that read, not FailoverTime
// after its own first Scan.
func TestFollowerObservesWhenLeaderStalls(t *testing.T) {
	db, table := testTable(t)
	ctx := context.Background()
	clock := newFakeClock()
	shards := []ShardInfo{{ID: "s0"}}
	lead := newStore(t, db, table, "lead", newFakeClock())
	victim := newStore(t, db, table, "victim", newFakeClock())
	f := newStore(t, db, table, "follower", clock)
	coordinating(f, shards, false)
	f.SetLeasing(Leasing{SyncInterval: testSync})
	mustLease(t, lead, status(LeaderRow, ""))
	mustLease(t, victim, status("s0", ""))
	// Both die now: nothing they hold moves any more.
	f.checkLeader(ctx) // first sight of the leader row
	clock.Advance(testFailover / 2)
	f.checkLeader(ctx) // unmoved since the last check: the follower reads the table
	clock.Advance(testFailover/2 + time.Second)
	f.checkLeader(ctx) // unmoved for FailoverTime: the follower takes the lead
	f.mu.Lock()
	leader := f.coord.leader
	f.mu.Unlock()
	if !leader {
		t.Fatal("the follower did not take over the leader row unmoved for FailoverTime")
	}
	clock.Advance(testFailover/2 - time.Second + 100*time.Millisecond) // FailoverTime after the read
	if err := f.plan(ctx); err != nil {
		t.Fatal(err)
	}
	if l := row(t, f, "s0"); l.Owner != "follower" || l.ClaimRequest != "follower" {
		t.Fatalf("s0: owner %q claim %q; want the dead worker's lease transferred to the new leader at once", l.Owner, l.ClaimRequest)
	}
}

// TestShardListEvery: a follower of a live leader lists the stream every FailoverTime, unless a
// row naming it is a shard it has not listed; the leader and a worker without a leader list
// every shard sync interval.
func TestShardListEvery(t *testing.T) {
	db, table := testTable(t)
	ctx := context.Background()
	clock := newFakeClock()
	f := newStore(t, db, table, "follower", clock, func(c *Config) { c.ClaimIndex = true })
	base := 500 * time.Millisecond
	if got := f.ShardListEvery(base); got != base {
		t.Fatalf("no leader known: %s, want %s", got, base)
	}
	coordinating(f, []ShardInfo{{ID: "s0"}}, false)
	lead := newStore(t, db, table, "lead", newFakeClock())
	mustLease(t, lead, status(LeaderRow, ""))
	f.checkLeader(ctx)
	if got := f.ShardListEvery(base); got != testFailover {
		t.Fatalf("follower of a live leader: %s, want %s", got, testFailover)
	}
	// The leader transfers a new child shard, not listed yet, to the follower.
	if err := lead.transfer(ctx, "s1", Lease{}, false, "follower"); err != nil {
		t.Fatal(err)
	}
	f.readClaims(ctx)
	f.mu.Lock()
	noIndex := f.coord.noIndex
	f.mu.Unlock()
	if noIndex {
		t.Fatal("the claim index is missing")
	}
	if got := f.ShardListEvery(base); got != base {
		t.Fatalf("a row naming the follower is not in its shard list: %s, want %s", got, base)
	}
	f.SetShards([]ShardInfo{{ID: "s0"}, {ID: "s1"}})
	f.readClaims(ctx)
	if got := f.ShardListEvery(base); got != testFailover {
		t.Fatalf("listed since: %s, want %s", got, testFailover)
	}
}
