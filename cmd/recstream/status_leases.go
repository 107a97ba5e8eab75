package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/recstream/recstream/checkpoint"
)

// ShardLeaseInfo is what `recstream status` shows of a shard's lease beyond its owner and
// checkpoint. The times come from the writers' wall clocks: informational, like the
// LeaseTimeout attribute they are read from.
type ShardLeaseInfo struct {
	// CheckpointTime is when the checkpoint was written (the writer's clock); nil when the row
	// has no checkpoint or was written before the table carried the time.
	CheckpointTime *time.Time `json:"checkpoint_time,omitempty"`
	// CheckpointAgeMillis is now minus CheckpointTime; nil when unknown.
	CheckpointAgeMillis *int64 `json:"checkpoint_age_ms,omitempty"`
	// LeaseStale: the owner's last renewal is older than worker.failover_time by the owner's
	// clock. The owner is probably dead; another worker takes the lease over shortly.
	LeaseStale bool `json:"lease_stale,omitempty"`
}

// WorkerLeases is one line of the per-worker summary: the open (not finished) shards a worker
// holds. Worker "" counts the open shards nobody holds.
type WorkerLeases struct {
	Worker string `json:"worker"`
	Leases int    `json:"leases"`
	Stale  int    `json:"stale,omitempty"` // of which LeaseStale
}

// statusSorts are the orders `status --sort` accepts.
var statusSorts = []string{"shard", "owner", "lag", "age"}

func validSort(by string) error {
	for _, s := range statusSorts {
		if s == by {
			return nil
		}
	}
	return fmt.Errorf("--sort: must be one of %v, got %q", statusSorts, by)
}

// addLeaseInfo fills each shard's ShardLeaseInfo from its lease row, as of now.
func addLeaseInfo(shards []ShardStatus, leases []checkpoint.Lease, now time.Time) {
	byID := make(map[string]checkpoint.Lease, len(leases))
	for _, l := range leases {
		byID[l.ShardID] = l
	}
	for i := range shards {
		l, ok := byID[shards[i].ShardID]
		if !ok {
			continue
		}
		if !l.CheckpointTime.IsZero() && l.Checkpoint != "" {
			t := l.CheckpointTime
			age := max(now.Sub(t), 0).Milliseconds()
			shards[i].CheckpointTime, shards[i].CheckpointAgeMillis = &t, &age
		}
		shards[i].LeaseStale = l.Owner != "" && !l.LeaseTimeout.IsZero() && now.After(l.LeaseTimeout)
	}
}

// workerLeases counts the open shards per owner, sorted by owner, unowned ones last.
func workerLeases(shards []ShardStatus) []WorkerLeases {
	by := map[string]*WorkerLeases{}
	for _, s := range shards {
		if s.Closed {
			continue
		}
		w, ok := by[s.Owner]
		if !ok {
			w = &WorkerLeases{Worker: s.Owner}
			by[s.Owner] = w
		}
		w.Leases++
		if s.LeaseStale {
			w.Stale++
		}
	}
	out := make([]WorkerLeases, 0, len(by))
	for _, w := range by {
		out = append(out, *w)
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i].Worker == "") != (out[j].Worker == "") {
			return out[j].Worker == ""
		}
		return out[i].Worker < out[j].Worker
	})
	return out
}

// statusLagConcurrency bounds the shards whose lag is asked at once (each costs a
// GetShardIterator and a GetRecords on that shard; both are limited per shard, not per stream).
const statusLagConcurrency = 8

// fillLags asks Kinesis for every open shard's lag behind its checkpoint, a few shards at a
// time; a shard that fails gets its error and no lag. Finished shards have lag 0.
func fillLags(ctx context.Context, kc *kinesis.Client, stream string, shards []ShardStatus) {
	sem := make(chan struct{}, statusLagConcurrency)
	var wg sync.WaitGroup
	for i := range shards {
		s := &shards[i]
		if s.Closed {
			zero := int64(0)
			s.LagMillis = &zero
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			lag, err := shardLag(ctx, kc, stream, s.ShardID, s.Checkpoint)
			if err != nil {
				s.Error = err.Error()
				return
			}
			s.LagMillis = &lag
		}()
	}
	wg.Wait()
}

// sortShards orders the shard lines: by shard id, by owner (then shard id), or largest lag or
// checkpoint age first (unknown values first: they need a look).
func sortShards(shards []ShardStatus, by string) {
	key := func(s ShardStatus) (int64, bool) {
		switch by {
		case "lag":
			if s.LagMillis == nil {
				return 0, false
			}
			return *s.LagMillis, true
		case "age":
			if s.CheckpointAgeMillis == nil {
				return 0, false
			}
			return *s.CheckpointAgeMillis, true
		}
		return 0, true
	}
	sort.SliceStable(shards, func(i, j int) bool {
		a, b := shards[i], shards[j]
		switch by {
		case "owner":
			if a.Owner != b.Owner {
				return a.Owner < b.Owner
			}
		case "lag", "age":
			ka, oka := key(a)
			kb, okb := key(b)
			if oka != okb {
				return !oka
			}
			if ka != kb {
				return ka > kb
			}
		}
		return a.ShardID < b.ShardID
	})
}

func ageText(ms *int64) string {
	if ms == nil {
		return "?"
	}
	d := time.Duration(*ms) * time.Millisecond
	if d < time.Second {
		return d.String()
	}
	return d.Round(time.Second).String()
}

func printWorkers(w io.Writer, workers []WorkerLeases) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tLEASES\tSTALE")
	total := 0
	for _, wl := range workers {
		name := wl.Worker
		if name == "" {
			name = "(no owner)"
		}
		total += wl.Leases
		fmt.Fprintf(tw, "%s\t%d\t%d\n", name, wl.Leases, wl.Stale)
	}
	fmt.Fprintf(tw, "(open shards)\t%d\t\n", total)
	tw.Flush()
	fmt.Fprintln(w)
}
