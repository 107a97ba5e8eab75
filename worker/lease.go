package worker

import (
	"errors"
	"sync"
	"time"

	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
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

// leaseGuard wraps the checkpointer the KCL worker uses. v1.0.0 ends a shard consumer only when
// a lease renewal fails, never because the record processor gave up, so when a processor drops
// its buffer (lease lost, or flush abandoned) the guard fails that shard's next renewal: the
// library then stops calling the dead processor, releases the lease, and the shard is later
// re-acquired from its last checkpoint by a fresh processor. Without the guard a processor that
// merely believed its lease lost would keep renewing it while ignoring records forever.
//
// When the wrapped checkpointer does not implement Lease (the library's default DynamoDB
// checkpointer), the guard estimates HeldUntil as the start of the last successful renewal
// plus the failover time: an estimate that trusts synchronised wall clocks, as v1.0.0 does.
type leaseGuard struct {
	chk.Checkpointer
	workerID string
	failover time.Duration
	lease    Lease // the checkpointer's own, or nil
	// onRelease, when set, is called with the shard id each time the library releases a
	// lease (a shard consumer ended), before the release is written.
	onRelease func(shardID string)

	mu      sync.Mutex
	dropped map[string]bool
	renewed map[string]time.Time
}

func newLeaseGuard(inner chk.Checkpointer, workerID string, failover time.Duration) *leaseGuard {
	g := &leaseGuard{Checkpointer: inner, workerID: workerID, failover: failover,
		dropped: map[string]bool{}, renewed: map[string]time.Time{}}
	if l, ok := inner.(Lease); ok {
		g.lease = l
	}
	return g
}

// GetLease implements chk.Checkpointer.
func (g *leaseGuard) GetLease(shard *par.ShardStatus, owner string) error {
	g.mu.Lock()
	dropped := g.dropped[shard.ID]
	g.mu.Unlock()
	if dropped && owner == g.workerID {
		return errLeaseDropped
	}
	start := time.Now()
	var err error
	if shard.GetLeaseOwner() == g.workerID {
		// A renewal, on the consumer's renewal goroutine (the event loop skips shards it owns).
		err = g.private(shard, false, func(c *par.ShardStatus) error { return g.Checkpointer.GetLease(c, owner) })
	} else {
		err = g.Checkpointer.GetLease(shard, owner)
	}
	if err == nil && owner == g.workerID {
		g.mu.Lock()
		g.renewed[shard.ID] = start
		g.mu.Unlock()
	}
	return err
}

// CheckpointSequence implements chk.Checkpointer. The library calls it on the shard's
// consumer goroutine; see private.
func (g *leaseGuard) CheckpointSequence(shard *par.ShardStatus) error {
	return g.private(shard, false, g.Checkpointer.CheckpointSequence)
}

// FetchCheckpoint implements chk.Checkpointer. For a shard this worker holds the caller is the
// shard's consumer (reading its starting checkpoint; the event loop fetches only shards it
// does not own), so it goes through private; otherwise it is the event loop, which needs
// every field, ClaimRequest included, written to the shared status.
func (g *leaseGuard) FetchCheckpoint(shard *par.ShardStatus) error {
	if shard.GetLeaseOwner() != g.workerID {
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
// ends, which is when a dropped shard may be acquired again.
func (g *leaseGuard) RemoveLeaseOwner(shardID string) error {
	if g.onRelease != nil {
		g.onRelease(shardID)
	}
	g.mu.Lock()
	delete(g.dropped, shardID)
	delete(g.renewed, shardID)
	g.mu.Unlock()
	return g.Checkpointer.RemoveLeaseOwner(shardID)
}

// drop makes the shard's next renewal fail (see the type comment).
func (g *leaseGuard) drop(shardID string) {
	g.mu.Lock()
	g.dropped[shardID] = true
	delete(g.renewed, shardID)
	g.mu.Unlock()
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
	return at.Add(g.failover), true
}
