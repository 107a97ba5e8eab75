// Package leasestatus is the lease side of `recstream status`: it joins the lease table (the
// rows checkpoint.Store.ListLeases returns) with the stream's shard list, and computes per
// shard the checkpoint age, whether the lease looks stale, and the lag behind the stream tip,
// and per worker the open shards it holds. Nothing here writes: the times it reads come from
// the writers' wall clocks and are informational, like the LeaseTimeout attribute.
package leasestatus

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/awsenv"
)

// Shard is one shard line: its lease row, joined with the stream's shard list.
type Shard struct {
	ShardID      string `json:"shard_id"`
	Owner        string `json:"owner"`         // "" when nobody holds the lease
	LeaseCounter int64  `json:"lease_counter"` // fencing token, moves on every renewal
	Checkpoint   string `json:"checkpoint"`    // last durable sequence number, SHARD_END, or ""
	Parent       string `json:"parent,omitempty"`
	Closed       bool   `json:"closed"`           // the shard reached SHARD_END (split or merged)
	LagMillis    *int64 `json:"lag_ms,omitempty"` // behind the stream tip; nil when unknown
	InLeaseTable bool   `json:"in_lease_table"`
	Error        string `json:"error,omitempty"`
	LeaseInfo
}

// LeaseInfo is what is shown of a shard's lease beyond its owner and checkpoint. The times
// come from the writers' wall clocks: informational, like the LeaseTimeout attribute they are
// read from.
type LeaseInfo struct {
	// CheckpointTime is when the checkpoint was written (the writer's clock); nil when the row
	// has no checkpoint or was written before the table carried the time.
	CheckpointTime *time.Time `json:"checkpoint_time,omitempty"`
	// CheckpointAgeMillis is now minus CheckpointTime; nil when unknown.
	CheckpointAgeMillis *int64 `json:"checkpoint_age_ms,omitempty"`
	// LeaseStale: the owner's last renewal is older than worker.failover_time by the owner's
	// clock. The owner is probably dead; another worker takes the lease over shortly.
	LeaseStale bool `json:"lease_stale,omitempty"`
}

// Worker is one line of the per-worker summary: the open (not finished) shards a worker
// holds. Worker "" counts the open shards nobody holds.
type Worker struct {
	Worker string `json:"worker"`
	Leases int    `json:"leases"`
	Stale  int    `json:"stale,omitempty"` // of which LeaseStale
}

// StreamShard is a shard as Kinesis lists it.
type StreamShard struct {
	ID     string
	Parent string // ParentShardId; "" for none
	Closed bool   // the shard has an ending sequence number (split or merged)
}

// LeaseLister is what Read needs of the lease table; *checkpoint.Store has it.
type LeaseLister interface {
	ListLeases(ctx context.Context) ([]checkpoint.Lease, error)
}

// KinesisReader is what Read needs of Kinesis; *kinesis.Client has it.
type KinesisReader interface {
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
}

// Report is the lease side of `recstream status`.
type Report struct {
	Shards   []Shard  // sorted by shard id
	Workers  []Worker // see Workers
	Problems []string // parts that could not be read: the lease table, the shard list
}

// LagTimeout bounds the lag reads of one Read: `recstream status` answers within about two
// seconds at 1,000 shards even when Kinesis is slow; a shard whose lag was not read in time
// shows it unknown, and one problem line counts them.
const LagTimeout = 1500 * time.Millisecond

// Read lists the lease table and the stream's shards (at once: two independent reads), joins
// them (Join), adds the lease info as of now (AddLeaseInfo) and every open shard's lag (read
// for at most LagTimeout), and counts the workers' leases. A part that cannot be read becomes
// a problem and the rest is still reported; a shard whose lag cannot be read carries its
// error.
func Read(ctx context.Context, table LeaseLister, kc KinesisReader, stream string) Report {
	var rep Report
	var (
		leases           []checkpoint.Lease
		shards           []StreamShard
		leaseErr, strErr error
		wg               sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		leases, leaseErr = table.ListLeases(ctx)
	}()
	shards, strErr = listShards(ctx, kc, stream)
	wg.Wait()
	for _, err := range []error{leaseErr, strErr} {
		if err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		}
	}
	rep.Shards = Join(leases, shards)
	AddLeaseInfo(rep.Shards, leases, time.Now())
	lctx, cancel := context.WithTimeout(ctx, LagTimeout)
	defer cancel()
	if n := fillLags(lctx, kc, stream, rep.Shards); n > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("lag not read within %s for %d of %d shards (shown unknown; the workers export recstream_worker_millis_behind_latest)",
			LagTimeout, n, len(rep.Shards)))
	}
	rep.Workers = Workers(rep.Shards)
	return rep
}

// listShards reads every page of the stream's shard list.
func listShards(ctx context.Context, kc KinesisReader, stream string) ([]StreamShard, error) {
	shards, err := awsenv.ListShards(ctx, kc, stream)
	if err != nil {
		return nil, err
	}
	out := make([]StreamShard, 0, len(shards))
	for _, s := range shards {
		out = append(out, StreamShard{ID: aws.ToString(s.ShardId), Parent: aws.ToString(s.ParentShardId),
			Closed: s.SequenceNumberRange != nil && s.SequenceNumberRange.EndingSequenceNumber != nil})
	}
	return out, nil
}

// Join joins the lease table with the stream's shard list, sorted by shard id: a shard the
// workers have not leased yet still shows, and so does a lease for a shard that has expired
// from the stream.
func Join(leases []checkpoint.Lease, shards []StreamShard) []Shard {
	byID := map[string]*Shard{}
	var order []string
	for _, l := range leases {
		if !checkpoint.IsShardRow(l.ShardID) {
			continue // the leader row, a worker's presence row
		}
		byID[l.ShardID] = &Shard{ShardID: l.ShardID, Owner: l.Owner, LeaseCounter: l.Counter, Checkpoint: l.Checkpoint,
			Parent: l.ParentShardID, Closed: l.Closed(), InLeaseTable: true}
		order = append(order, l.ShardID)
	}
	for _, s := range shards {
		st, ok := byID[s.ID]
		if !ok {
			st = &Shard{ShardID: s.ID, Parent: s.Parent}
			byID[s.ID] = st
			order = append(order, s.ID)
		}
		if st.Parent == "" {
			st.Parent = s.Parent
		}
	}
	out := make([]Shard, 0, len(order))
	seen := map[string]bool{}
	for _, id := range order {
		if !seen[id] {
			seen[id] = true
			out = append(out, *byID[id])
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ShardID < out[j].ShardID })
	return out
}

// AddLeaseInfo fills each shard's LeaseInfo from its lease row, as of now.
func AddLeaseInfo(shards []Shard, leases []checkpoint.Lease, now time.Time) {
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

// Workers counts the open shards per owner, sorted by owner, unowned ones last.
func Workers(shards []Shard) []Worker {
	by := map[string]*Worker{}
	for _, s := range shards {
		if s.Closed {
			continue
		}
		w, ok := by[s.Owner]
		if !ok {
			w = &Worker{Worker: s.Owner}
			by[s.Owner] = w
		}
		w.Leases++
		if s.LeaseStale {
			w.Stale++
		}
	}
	out := make([]Worker, 0, len(by))
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

// lagConcurrency bounds the shards whose lag is asked at once. Each costs a GetShardIterator
// and a GetRecords on that shard; both are limited per shard (5 a second), not per stream, so
// the bound is for the client's connections, not Kinesis's limits: at 8, 1,000 shards took
// 2,000 sequential round trips / 8, several seconds (docs/benchmarks.md).
const lagConcurrency = 64

// fillLags asks Kinesis for every open shard's lag behind its checkpoint, lagConcurrency
// shards at a time, until ctx ends; a shard that fails gets its error and no lag, one not
// read before ctx ended gets neither (counted in the result). Finished shards have lag 0.
func fillLags(ctx context.Context, kc KinesisReader, stream string, shards []Shard) (unread int) {
	sem := make(chan struct{}, lagConcurrency)
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for i := range shards {
		s := &shards[i]
		if s.Closed {
			zero := int64(0)
			s.LagMillis = &zero
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			mu.Lock()
			unread++
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			lag, err := shardLag(ctx, kc, stream, s.ShardID, s.Checkpoint)
			switch {
			case err != nil && ctx.Err() != nil:
				mu.Lock()
				unread++
				mu.Unlock()
			case err != nil:
				s.Error = err.Error()
			default:
				s.LagMillis = &lag
			}
		}()
	}
	wg.Wait()
	return unread
}

// shardLag asks Kinesis how far the record after the checkpoint is behind the tip.
func shardLag(ctx context.Context, kc KinesisReader, stream, shard, cp string) (int64, error) {
	in := &kinesis.GetShardIteratorInput{StreamName: aws.String(stream), ShardId: aws.String(shard), ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon}
	if cp != "" && cp != checkpoint.ShardEnd && !strings.EqualFold(cp, "TRIM_HORIZON") && !strings.EqualFold(cp, "LATEST") {
		in.ShardIteratorType = ktypes.ShardIteratorTypeAfterSequenceNumber
		in.StartingSequenceNumber = aws.String(cp)
	}
	it, err := kc.GetShardIterator(ctx, in)
	if err != nil {
		var rnf *ktypes.ResourceNotFoundException
		if errors.As(err, &rnf) {
			return 0, fmt.Errorf("shard gone from the stream")
		}
		return 0, fmt.Errorf("shard iterator: %w", err)
	}
	out, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator, Limit: aws.Int32(1)})
	if err != nil {
		return 0, fmt.Errorf("get records: %w", err)
	}
	if len(out.Records) == 0 {
		return 0, nil // nothing after the checkpoint: caught up
	}
	lag := time.Since(aws.ToTime(out.Records[0].ApproximateArrivalTimestamp)).Milliseconds()
	return max(lag, aws.ToInt64(out.MillisBehindLatest)), nil
}

// Order is an order of the shard lines (Sort).
type Order string

// The orders of the shard lines.
const (
	ByShard Order = "shard" // by shard id
	ByOwner Order = "owner" // by owner, then shard id
	ByLag   Order = "lag"   // largest lag first
	ByAge   Order = "age"   // oldest checkpoint first
)

// Orders are the orders Sort accepts, as ParseOrder names them.
var Orders = []Order{ByShard, ByOwner, ByLag, ByAge}

// ParseOrder returns the order named s.
func ParseOrder(s string) (Order, error) {
	for _, o := range Orders {
		if string(o) == s {
			return o, nil
		}
	}
	return "", fmt.Errorf("must be one of %v, got %q", Orders, s)
}

// Sort orders the shard lines: by shard id, by owner (then shard id), or largest lag or
// checkpoint age first (unknown values first: they need a look).
func Sort(shards []Shard, by Order) {
	key := func(s Shard) (int64, bool) {
		switch by {
		case ByLag:
			if s.LagMillis == nil {
				return 0, false
			}
			return *s.LagMillis, true
		case ByAge:
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
		case ByOwner:
			if a.Owner != b.Owner {
				return a.Owner < b.Owner
			}
		case ByLag, ByAge:
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
