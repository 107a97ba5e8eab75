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
	err := g.Checkpointer.GetLease(shard, owner)
	if err == nil && owner == g.workerID {
		g.mu.Lock()
		g.renewed[shard.ID] = start
		g.mu.Unlock()
	}
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
