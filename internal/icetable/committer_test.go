package icetable_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/recstream/recstream/internal/icetable"
	"github.com/recstream/recstream/internal/icetable/icetabletest"
	"github.com/recstream/recstream/worker"
)

// writeFile PUTs a data file of records seq first..last of shard and returns its location.
func writeFile(t *testing.T, c *icetable.Committer, shard string, first, last int, at time.Time) string {
	t.Helper()
	var recs []worker.OutputRecord
	for s := first; s <= last; s++ {
		recs = append(recs, worker.OutputRecord{SessionID: fmt.Sprintf("s-%d", s), CustomerNumber: int64(s), ShardID: shard,
			SequenceNumber: fmt.Sprint(s), ArrivalTime: at, ModelVersion: "v1"})
	}
	body, err := worker.EncodeTableFile(recs)
	if err != nil {
		t.Fatal(err)
	}
	loc := c.DataPath(at, worker.TableFileName("stream", shard, &recs[0], &recs[len(recs)-1]))
	if err := c.PutData(context.Background(), loc, body); err != nil {
		t.Fatal(err)
	}
	return loc
}

func pos(seq int) icetable.Position {
	if seq == 0 {
		return icetable.Position{}
	}
	return icetable.Position{Seq: fmt.Sprint(seq)}
}

// The commit protocol against the real catalog (PostgreSQL) and object storage: a commit
// lands once; a repeated request (a lost answer) is answered without a second file; a
// request that follows a stale position is refused; the independent reader sees every record
// once and the summaries carry the positions.
func TestCommitterPositions(t *testing.T) {
	env := icetabletest.New(t)
	c := env.Committer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	at := time.Date(2026, 12, 5, 3, 4, 5, 123456000, time.UTC)
	key := icetable.ShardKey{Stream: "stream", Shard: "shardId-000000000000"}

	if p, err := c.Position(ctx, key); err != nil || !p.IsZero() {
		t.Fatalf("position of a new table: %v, %v; want none", p, err)
	}
	f1 := writeFile(t, c, key.Shard, 1, 3, at)
	if err := c.Commit(ctx, icetable.Request{Shard: key, Files: []string{f1}, Prev: pos(0), Last: pos(3)}); err != nil {
		t.Fatal(err)
	}
	// The same request again (its first answer lost): answered, not committed twice.
	if err := c.Commit(ctx, icetable.Request{Shard: key, Files: []string{f1}, Prev: pos(0), Last: pos(3)}); err != nil {
		t.Fatalf("repeated commit: %v", err)
	}
	// A writer that still believes the shard is at 0 (an owner that missed the commit).
	f2 := writeFile(t, c, key.Shard, 1, 5, at)
	if err := c.Commit(ctx, icetable.Request{Shard: key, Files: []string{f2}, Prev: pos(0), Last: pos(5)}); !errors.Is(err, icetable.ErrPositionMoved) {
		t.Fatalf("stale commit: got %v, want ErrPositionMoved", err)
	}
	f3 := writeFile(t, c, key.Shard, 4, 5, at.Add(time.Hour))
	if err := c.Commit(ctx, icetable.Request{Shard: key, Files: []string{f3}, Prev: pos(3), Last: pos(5)}); err != nil {
		t.Fatal(err)
	}
	if p, err := c.Position(ctx, key); err != nil || p != pos(5) {
		t.Fatalf("position: %v, %v; want 5:0", p, err)
	}

	snap := env.ReadTable(t)
	if len(snap.Files) != 2 || snap.Files[0].Path != f1 || snap.Files[1].Path != f3 {
		t.Fatalf("live files %+v, want %s and %s", snap.Files, f1, f3)
	}
	rows := icetabletest.ReadRows[worker.TableRecord](t, env, snap)
	seen := map[string]int{}
	for _, r := range rows {
		seen[r.SequenceNumber]++
		if !r.ArrivalTime.Truncate(time.Hour).Equal(at.Truncate(time.Hour)) && !r.ArrivalTime.Truncate(time.Hour).Equal(at.Add(time.Hour).Truncate(time.Hour)) {
			t.Errorf("arrival_time %s lost its value", r.ArrivalTime)
		}
	}
	for s := 1; s <= 5; s++ {
		if seen[fmt.Sprint(s)] != 1 {
			t.Errorf("record %d seen %d times, want once", s, seen[fmt.Sprint(s)])
		}
	}
	if len(rows) != 5 {
		t.Errorf("%d rows, want 5", len(rows))
	}
	cur := snap.Metadata.CurrentSnapshot()
	if got := cur.Summary[icetable.PositionKey(key.Stream, key.Shard)]; got != "5:0" {
		t.Errorf("current snapshot summary position %q, want 5:0 (summary %v)", got, cur.Summary)
	}
	for _, f := range snap.Files {
		if _, ok := f.Partition["arrival_time_hour"]; !ok {
			t.Errorf("%s: partition %v lacks arrival_time_hour", f.Path, f.Partition)
		}
	}
}

// Several workers commit to one table at once: each commit is a compare-and-swap, a loser
// reloads and retries, and nothing is lost or doubled.
func TestConcurrentCommitters(t *testing.T) {
	env := icetabletest.New(t)
	const workers, rounds = 3, 6
	committers := make([]*icetable.Committer, workers)
	var mu sync.Mutex
	outcomes := map[string]int{}
	for i := range committers {
		committers[i] = env.Committer(t)
		committers[i].Observe = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	at := time.Date(2026, 12, 5, 4, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := committers[w]
			shard := fmt.Sprintf("shardId-%012d", w)
			key := icetable.ShardKey{Stream: "stream", Shard: shard}
			for r := range rounds {
				first, last := r*10+1, r*10+10
				f := writeFile(t, c, shard, first, last, at)
				err := c.Commit(ctx, icetable.Request{Shard: key, Files: []string{f}, Prev: pos(r * 10), Last: pos(last)})
				if err != nil {
					errs <- fmt.Errorf("worker %d round %d: %w", w, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	_ = outcomes
	mu.Unlock()
	snap := env.ReadTable(t)
	rows := icetabletest.ReadRows[worker.TableRecord](t, env, snap)
	if len(rows) != workers*rounds*10 {
		t.Fatalf("%d rows, want %d", len(rows), workers*rounds*10)
	}
	seen := map[string]bool{}
	for _, r := range rows {
		k := r.ShardID + "/" + r.SequenceNumber
		if seen[k] {
			t.Fatalf("record %s twice", k)
		}
		seen[k] = true
	}
}

// A caught-up shard's flush (Urgent) is committed after the gathering pause, not at the next
// commit_interval tick, together with the request of the same shard submitted before it and
// not landed yet (in order, one snapshot); a request that is not urgent still waits for the
// tick. And a committer that keeps the table its last commit left decides nothing on it that
// another writer changed: the shard it committed, moved on by another committer (the lease
// went there and came back), is committed from the position that one left.
func TestCommitterUrgentAndChained(t *testing.T) {
	env := icetabletest.New(t)
	env.Config.CommitInterval = 10 * time.Second
	c := env.Committer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	at := time.Date(2026, 12, 5, 5, 0, 0, 0, time.UTC)
	key := icetable.ShardKey{Stream: "stream", Shard: "shardId-000000000000"}
	if err := c.Commit(ctx, icetable.Request{Shard: key, Files: []string{writeFile(t, c, key.Shard, 1, 3, at)}, Prev: pos(0), Last: pos(3)}); err != nil {
		t.Fatal(err)
	}
	snapshots := func() int { return len(env.ReadTable(t).Metadata.Snapshots) }
	before := snapshots()

	// Two flushes, the second at the tip, submitted back to back within the interval.
	start := time.Now()
	d1 := c.Submit(ctx, icetable.Request{Shard: key, Files: []string{writeFile(t, c, key.Shard, 4, 5, at)}, Prev: pos(3), Last: pos(5)})
	d2 := c.Submit(ctx, icetable.Request{Shard: key, Files: []string{writeFile(t, c, key.Shard, 6, 7, at)}, Prev: pos(5), Last: pos(7), Urgent: true})
	for i, d := range []<-chan error{d1, d2} {
		select {
		case err := <-d:
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("request %d not committed %s after an urgent request (commit_interval %s): the urgent one waited for the tick",
				i+1, time.Since(start).Round(time.Millisecond), env.Config.CommitInterval)
		}
	}
	if n := snapshots(); n != before+1 {
		t.Errorf("%d snapshots after the two requests, want %d (one commit for both)", n, before+1)
	}

	// Not urgent: it waits for the interval since the last commit.
	d3 := c.Submit(ctx, icetable.Request{Shard: key, Files: []string{writeFile(t, c, key.Shard, 8, 9, at)}, Prev: pos(7), Last: pos(9)})
	select {
	case err := <-d3:
		t.Fatalf("a request that is not urgent was answered (%v) within 2 s of the last commit, commit_interval %s", err, env.Config.CommitInterval)
	case <-time.After(2 * time.Second):
	}
	select {
	case err := <-d3:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("request not committed within 30 s")
	}

	// Not urgent when asked, hurried afterwards (its shard reached the tip): committed after
	// the gathering pause, not at the tick 10 s after the last commit.
	if c.Hurry(key) {
		t.Error("Hurry found a request of a shard with nothing pending")
	}
	start = time.Now()
	d4 := c.Submit(ctx, icetable.Request{Shard: key, Files: []string{writeFile(t, c, key.Shard, 10, 11, at)}, Prev: pos(9), Last: pos(11)})
	if !c.Hurry(key) {
		t.Fatal("Hurry did not find the request just submitted")
	}
	select {
	case err := <-d4:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("hurried request not committed %s after it was hurried (commit_interval %s)", time.Since(start).Round(time.Millisecond), env.Config.CommitInterval)
	}

	// Another writer moves the shard on (11 → 13); this committer, whose kept table says 11,
	// gets a request that follows 13.
	other := env.Committer(t)
	if err := other.Commit(ctx, icetable.Request{Shard: key, Files: []string{writeFile(t, other, key.Shard, 12, 13, at)}, Prev: pos(11), Last: pos(13)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(ctx, icetable.Request{Shard: key, Files: []string{writeFile(t, c, key.Shard, 14, 15, at)}, Prev: pos(13), Last: pos(15), Urgent: true}); err != nil {
		t.Fatalf("commit after another writer moved the shard: %v", err)
	}
	rows := icetabletest.ReadRows[worker.TableRecord](t, env, env.ReadTable(t))
	seen := map[string]int{}
	for _, r := range rows {
		seen[r.SequenceNumber]++
	}
	for s := 1; s <= 15; s++ {
		if seen[fmt.Sprint(s)] != 1 {
			t.Errorf("record %d seen %d times, want once", s, seen[fmt.Sprint(s)])
		}
	}
}

// TestCommitterUrgentBudget: urgent requests go ahead of the interval's tick at most
// urgentBurst (3) times in a burst; the next one waits for the tick. Without the budget every
// caught-up shard's flush at 1 s windows was a commit of its own.
func TestCommitterUrgentBudget(t *testing.T) {
	env := icetabletest.New(t)
	env.Config.CommitInterval = 10 * time.Second
	c := env.Committer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	at := time.Date(2026, 12, 5, 6, 0, 0, 0, time.UTC)
	key := icetable.ShardKey{Stream: "stream", Shard: "shardId-000000000000"}
	submit := func(i int) (<-chan error, time.Time) {
		first, last := 2*i+1, 2*i+2
		return c.Submit(ctx, icetable.Request{Shard: key, Files: []string{writeFile(t, c, key.Shard, first, last, at)},
			Prev: pos(2 * i), Last: pos(last), Urgent: true}), time.Now()
	}
	// The first request finds no commit before it: committed after the gathering pause, like
	// the three urgent ones after it (the budget), each submitted once the one before landed.
	for i := range 4 {
		d, start := submit(i)
		select {
		case err := <-d:
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
		case <-time.After(4 * time.Second):
			t.Fatalf("urgent request %d not committed within 4 s (commit_interval %s): the budget allows 3 ahead of the tick",
				i+1, env.Config.CommitInterval)
		}
		t.Logf("request %d committed in %s", i+1, time.Since(start).Round(time.Millisecond))
	}
	d, start := submit(4)
	select {
	case err := <-d:
		t.Fatalf("a fourth urgent request ahead of the tick was answered (%v) after %s: the budget did not hold", err, time.Since(start).Round(time.Millisecond))
	case <-time.After(4 * time.Second):
	}
	select {
	case err := <-d:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("request past the budget not committed at the tick")
	}
}
