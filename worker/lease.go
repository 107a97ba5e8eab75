package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
	"go.uber.org/zap"

	"github.com/recstream/recstream/checkpoint"
)

// Lease tells the processor how long this process surely holds a shard's lease:
// HeldUntil returns a deadline on the local monotonic clock before which no other worker can
// take the lease, and false when the lease is not (or no longer) held. The checkpoint store
// implements it; it is called from shard goroutines concurrently.
type Lease interface {
	HeldUntil(shardID string) (time.Time, bool)
}

// errLeaseDropped is what a renewal of a dropped shard returns (see leaseGuard).
var errLeaseDropped = errors.New("lease dropped by the record processor after losing it")

// What the guard uses of our checkpoint.Store beyond chk.Checkpointer (optional: the library's
// own DynamoDB checkpointer, for development, has none of it).
type (
	leaseAbandoner interface{ Abandon(shardID string) }
	leaseRenewer   interface {
		Renew(shard *par.ShardStatus) error
	}
	leasePeeker interface {
		Peek(shard *par.ShardStatus) error
	}
	// leaseCoordinator is the store's leader-assigned leasing (checkpoint/leader.go).
	leaseCoordinator interface {
		Coordinate(ctx context.Context)
		HandOff(ctx context.Context) time.Duration
		ResignLeadership()
		Retire(ctx context.Context)
	}
	leasePolicy interface {
		SetLeasing(checkpoint.Leasing)
		SetShards([]checkpoint.ShardInfo)
	}
	// shardListPacer is the store's say on how often this worker lists the stream.
	shardListPacer interface {
		ShardListEvery(base time.Duration) time.Duration
	}
)

// leaseGuard wraps the checkpointer the KCL worker uses and repairs, at that seam, what
// vmware-go-kcl-v2 v1.0.0 gets wrong about leases:
//
//   - v1.0.0 ends a shard consumer only when a lease renewal fails, never because the record
//     processor gave up, so when a processor drops its buffer (lease lost, or flush
//     abandoned) the guard fails that shard's next renewal: the library then stops calling
//     the dead processor, releases the lease, and the shard is later re-acquired from its
//     last checkpoint by a fresh processor. Without the guard a processor that merely
//     believed its lease lost would keep renewing it while ignoring records forever.
//   - v1.0.0 ends the consumer at the first failed renewal, even a transient one (a
//     DynamoDB timeout), dropping the processor's buffer. The guard retries a renewal that
//     failed for any other reason than the lease's state while the lease has more than
//     worker.lease_safety_margin left (GetLease).
//   - v1.0.0 releases the lease of every consumer that ends. A processor that gave up with an
//     upload possibly still in flight (abandon), and every consumer still running when the
//     drain was abandoned (drain), must not release: a new owner could replay while the old
//     PUT still commits. The guard leaves those leases to expire (RemoveLeaseOwner).
//   - It routes the event loop's per-pass fetches to the store's lease view (Peek) and gives
//     the store its policy (checkpoint.Leasing) and the stream's shard list (kinesis).
//
// When the wrapped checkpointer does not implement Lease (the library's default DynamoDB
// checkpointer), the guard estimates HeldUntil as the start of the last successful renewal
// plus the failover time: an estimate that trusts synchronised wall clocks, as v1.0.0 does.
type leaseGuard struct {
	chk.Checkpointer
	workerID string
	cfg      Config
	log      *zap.Logger
	lease    Lease // the checkpointer's own, or nil
	// onRelease, when set, is called with the shard id each time the library releases a
	// lease (a shard consumer ended), before the release is written.
	onRelease func(shardID string)
	// drain, when set, is the drain context: once it is done (the drain was abandoned at
	// worker.shutdown_timeout) no lease is released any more.
	drain context.Context
	// retries counts renewal retries as op "lease" (recstream_worker_retries_total); may be nil.
	retries *prometheus.CounterVec

	mu        sync.Mutex
	dropped   map[string]bool
	abandoned map[string]bool
	renewed   map[string]time.Time
	children  map[string]bool // shards with a parent (from the shard list or the library)
}

func newLeaseGuard(inner chk.Checkpointer, workerID string, cfg Config, log *zap.Logger) *leaseGuard {
	if log == nil {
		log = zap.NewNop()
	}
	g := &leaseGuard{Checkpointer: inner, workerID: workerID, cfg: cfg, log: log.With(zap.String("component", "worker")),
		dropped: map[string]bool{}, abandoned: map[string]bool{}, renewed: map[string]time.Time{}, children: map[string]bool{}}
	if l, ok := inner.(Lease); ok {
		g.lease = l
	}
	if p, ok := inner.(leasePolicy); ok {
		p.SetLeasing(checkpoint.Leasing{SyncInterval: cfg.ShardSyncInterval, StealInterval: cfg.LeaseStealingInterval})
	}
	return g
}

// attach wires the guard to a running worker: the processors' release hook, the drain
// context (see the drain field) and the worker's metrics.
func (g *leaseGuard) attach(drain context.Context, onRelease func(string), m *Metrics) {
	g.drain, g.onRelease = drain, onRelease
	if m != nil {
		g.retries = m.Retries
	}
}

// GetLease implements chk.Checkpointer: an acquisition from the library's event loop, or a
// renewal from a shard consumer's renewal goroutine (the event loop skips shards it owns).
func (g *leaseGuard) GetLease(shard *par.ShardStatus, owner string) error {
	g.mu.Lock()
	dropped := g.dropped[shard.ID]
	g.mu.Unlock()
	if dropped && owner == g.workerID {
		return errLeaseDropped
	}
	if shard.GetLeaseOwner() == g.workerID {
		return g.renew(shard, owner)
	}
	g.noteChild(shard)
	start := time.Now()
	err := g.Checkpointer.GetLease(shard, owner)
	if err == nil && owner == g.workerID {
		g.mu.Lock()
		g.renewed[shard.ID] = start
		g.mu.Unlock()
	}
	return err
}

// renew renews a held lease. A failure that is not about the lease's state (a DynamoDB
// timeout, throttling, a connection reset) is retried with backoff for as long as the lease
// keeps more than worker.lease_safety_margin, which is also when uploads stop; only a real
// loss (the store's conditional write refused, the lease claimed by another worker, the
// processor's drop) or that deadline ends the consumer.
func (g *leaseGuard) renew(shard *par.ShardStatus, owner string) error {
	backoff := g.cfg.Retry.InitialBackoff
	if backoff <= 0 {
		backoff = 100 * time.Millisecond
	}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := g.private(shard, false, func(c *par.ShardStatus) error {
			if r, ok := g.Checkpointer.(leaseRenewer); ok {
				return r.Renew(c)
			}
			return g.Checkpointer.GetLease(c, owner)
		})
		if err == nil {
			g.mu.Lock()
			if !g.dropped[shard.ID] {
				g.renewed[shard.ID] = start
			}
			g.mu.Unlock()
			return nil
		}
		if errors.As(err, &chk.ErrLeaseNotAcquired{}) {
			return err // the lease's state: lost, claimed by another worker
		}
		g.mu.Lock()
		dropped := g.dropped[shard.ID]
		g.mu.Unlock()
		until, held := g.HeldUntil(shard.ID)
		if dropped || !held || time.Until(until)-g.cfg.LeaseSafetyMargin <= backoff {
			g.log.Warn("lease renewal failed, giving the lease up", zap.String("shard_id", shard.ID),
				zap.Int("attempt", attempt), zap.Error(err))
			return err
		}
		if g.retries != nil {
			g.retries.WithLabelValues(shard.ID, "lease").Inc()
		}
		g.log.Warn("retrying", zap.String("shard_id", shard.ID), zap.String("op", "lease"), zap.Int("attempt", attempt),
			zap.Duration("backoff", backoff), zap.Error(err))
		time.Sleep(backoff)
		backoff = min(2*backoff, max(g.cfg.Retry.MaxBackoff, backoff))
	}
}

// CheckpointSequence implements chk.Checkpointer. The library calls it on the shard's
// consumer goroutine (see private), after setting the status's checkpoint to the new value;
// the store puts the table's value back when the write fails, and the guard copies it to the
// shared status, so the library never remembers a checkpoint that was not written.
func (g *leaseGuard) CheckpointSequence(shard *par.ShardStatus) error {
	return g.private(shard, true, g.Checkpointer.CheckpointSequence)
}

// FetchCheckpoint implements chk.Checkpointer. For a shard this worker holds the caller is the
// shard's consumer (reading its starting checkpoint; the event loop fetches only shards it
// does not own), so it goes through private and reads the row. Otherwise it is the event
// loop's per-pass fetch, which needs every field, ClaimRequest included, written to the
// shared status and is answered from the store's lease view (Peek), or the parent probe of a
// child's consumer (a bare status without sequence range), which reads the row.
func (g *leaseGuard) FetchCheckpoint(shard *par.ShardStatus) error {
	if shard.GetLeaseOwner() != g.workerID {
		if p, ok := g.Checkpointer.(leasePeeker); ok && shard.StartingSequenceNumber != "" {
			g.noteChild(shard)
			return p.Peek(shard)
		}
		return g.Checkpointer.FetchCheckpoint(shard)
	}
	return g.private(shard, true, g.Checkpointer.FetchCheckpoint)
}

// private runs a store call made off the library's event loop on a copy of the shard status
// and copies back the lease owner, lease timeout and (withCheckpoint) checkpoint, under the
// status's lock, but never ClaimRequest. v1.0.0's event loop reads ShardStatus.ClaimRequest
// of every shard without the lock (worker.go rebalance and eventLoop), so a store writing it
// (even an unchanged "") from a renewal or consumer goroutine is a data race the race
// detector reports once lease stealing is on; for a held shard the claim matters only to the
// store, which reads it from the table.
func (g *leaseGuard) private(shard *par.ShardStatus, withCheckpoint bool, call func(*par.ShardStatus) error) error {
	shard.Mux.RLock()
	c := &par.ShardStatus{ID: shard.ID, ParentShardId: shard.ParentShardId, Checkpoint: shard.Checkpoint, AssignedTo: shard.AssignedTo,
		Mux: &sync.RWMutex{}, LeaseTimeout: shard.LeaseTimeout, StartingSequenceNumber: shard.StartingSequenceNumber,
		EndingSequenceNumber: shard.EndingSequenceNumber, ClaimRequest: shard.ClaimRequest}
	shard.Mux.RUnlock()
	err := call(c)
	shard.Mux.Lock()
	shard.AssignedTo, shard.LeaseTimeout = c.AssignedTo, c.LeaseTimeout
	if withCheckpoint {
		shard.Checkpoint = c.Checkpoint
	}
	shard.Mux.Unlock()
	return err
}

// RemoveLeaseOwner implements chk.Checkpointer; the library calls it when a shard consumer
// ends, which is when a dropped shard may be acquired again. A shard whose processor
// abandoned a write, and any shard still running when the drain was abandoned, is not
// released: its lease is left to expire (see abandon).
func (g *leaseGuard) RemoveLeaseOwner(shardID string) error {
	if g.onRelease != nil {
		g.onRelease(shardID)
	}
	g.mu.Lock()
	keep := g.abandoned[shardID] || (g.drain != nil && g.drain.Err() != nil)
	delete(g.dropped, shardID)
	delete(g.abandoned, shardID)
	delete(g.renewed, shardID)
	g.mu.Unlock()
	if keep {
		if a, ok := g.Checkpointer.(leaseAbandoner); ok {
			a.Abandon(shardID)
		}
		g.log.Info("lease left to expire: a write may still be in flight", zap.String("shard_id", shardID),
			zap.Duration("failover_time", g.cfg.FailoverTime))
		return nil
	}
	return g.Checkpointer.RemoveLeaseOwner(shardID)
}

// drop makes the shard's next renewal fail (see the type comment).
func (g *leaseGuard) drop(shardID string) {
	g.mu.Lock()
	g.dropped[shardID] = true
	delete(g.renewed, shardID)
	g.mu.Unlock()
}

// abandon is drop for a processor that gives up with a write possibly in flight (an upload
// whose context was cancelled may still commit on the server). The lease is never released
// (no RemoveLeaseOwner is written for the shard) and no longer renewed: it expires
// worker.failover_time after its last renewal, by which time every write this process
// started under it had been cancelled for at least worker.lease_safety_margin (an upload's
// context ends when HeldUntil - margin is reached). Only then can another worker, or this one,
// take the shard and replay it. abandon does no I/O.
func (g *leaseGuard) abandon(shardID string) {
	g.mu.Lock()
	g.dropped[shardID] = true
	g.abandoned[shardID] = true
	delete(g.renewed, shardID)
	g.mu.Unlock()
	if a, ok := g.Checkpointer.(leaseAbandoner); ok {
		a.Abandon(shardID)
	}
}

// HeldUntil implements Lease.
func (g *leaseGuard) HeldUntil(shardID string) (time.Time, bool) {
	g.mu.Lock()
	dropped := g.dropped[shardID]
	at, ok := g.renewed[shardID]
	g.mu.Unlock()
	if dropped {
		return time.Time{}, false
	}
	if g.lease != nil {
		return g.lease.HeldUntil(shardID)
	}
	if !ok {
		return time.Time{}, false
	}
	return at.Add(g.cfg.FailoverTime), true
}

// noteChild remembers that a shard has a parent (see kinesis: its start position).
func (g *leaseGuard) noteChild(shard *par.ShardStatus) {
	if shard.ParentShardId == "" {
		return
	}
	g.mu.Lock()
	g.children[shard.ID] = true
	g.mu.Unlock()
}

func (g *leaseGuard) isChild(shardID string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.children[shardID]
}

// setShards takes the stream's shard list (from the ListShards cache, see kinesis).
func (g *leaseGuard) setShards(shards []checkpoint.ShardInfo) {
	g.mu.Lock()
	for _, s := range shards {
		if len(s.Parents) > 0 {
			g.children[s.ID] = true
		}
	}
	g.mu.Unlock()
	if p, ok := g.Checkpointer.(leasePolicy); ok {
		p.SetShards(shards)
	}
}

// shardListTTL is how long the stream's shard list is reused (see kinesis):
// worker.shard_sync_interval, or longer when the store says so (a follower of a lease leader
// needs the list only to start what the leader assigns it). Kinesis allows a stream 100
// ListShards a second: a hundred tasks listing twice a second would be throttled.
func (g *leaseGuard) shardListTTL() time.Duration {
	if p, ok := g.Checkpointer.(shardListPacer); ok {
		return p.ShardListEvery(g.cfg.ShardSyncInterval)
	}
	return g.cfg.ShardSyncInterval
}

// leasePass is the period of the library's event loop: an eighth of shard_sync_interval,
// between 50 ms and 250 ms.
func leasePass(syncInterval time.Duration) time.Duration {
	return min(max(syncInterval/8, 50*time.Millisecond), 250*time.Millisecond)
}
