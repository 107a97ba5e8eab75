package worker

import (
	"context"
	"testing"
	"time"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/stacktest"
)

// TestWorkersShareShards: two workers split a 4-shard stream; a third joins and, through lease
// stealing, takes over a shard from a busy worker while records flow; then the first and the
// third leave while events keep arriving: every record is written exactly once. Under -race it
// also pins the data race on ShardStatus.ClaimRequest between the library's event loop and
// store writes from renewal/consumer goroutines (see leaseGuard.private).
func TestWorkersShareShards(t *testing.T) {
	e := newTestEnv(t, 4)
	log := testLogger(t)
	owners := func() map[string]int {
		s, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: "observer", FailoverTime: e.Cfg.FailoverTime}, e.db)
		if err != nil {
			t.Fatal(err)
		}
		ls, _ := s.ListLeases(context.Background())
		m := map[string]int{}
		for _, l := range ls {
			if l.Owner != "" {
				m[l.Owner]++
			}
		}
		return m
	}
	next := 0
	putN := func(n int) {
		b := make([][]byte, n)
		for i := range b {
			b[i] = event(next, "m")
			next++
		}
		e.put(t, b)
	}
	putN(100)
	w1 := start(e.newWorker(t, "m1", log, nil))
	w2 := start(e.newWorker(t, "m2", log, nil))
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool {
		o := owners()
		return o["m1"]+o["m2"] == 4 && o["m1"] >= 1 && o["m2"] >= 1
	}, "two workers did not split the 4 shards: %v", owners())
	putN(100)
	w3 := start(e.newWorker(t, "m3", log, nil))
	putN(100)
	// No lease is free or expired: only a claim (lease stealing) can give m3 a shard.
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool {
		o := owners()
		return o["m3"] >= 1 && o["m1"]+o["m2"]+o["m3"] == 4
	}, "joining m3 never held a lease: %v", owners())
	putN(100)
	if err := w1.stop(t); err != nil {
		t.Fatalf("m1: %v", err)
	}
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool {
		o := owners()
		return o["m1"] == 0 && o["m2"]+o["m3"] == 4
	}, "m1's shards not taken over: %v", owners())
	putN(100)
	if err := w3.stop(t); err != nil {
		t.Fatalf("m3: %v", err)
	}
	putN(100)
	e.waitExactlyOnce(t, "m", next, 90*time.Second)
	if err := w2.stop(t); err != nil {
		t.Fatalf("m2: %v", err)
	}
	if err := exactlyOnce(e.read(t), "m", next); err != nil {
		t.Fatal(err)
	}
}
