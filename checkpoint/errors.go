package checkpoint

import (
	"errors"
	"fmt"
	"strconv"

	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
)

// Op is a lease operation, as a *LeaseError and the "lease lost" log line name it.
type Op uint8

// The lease operations.
const (
	OpAcquire    Op = iota + 1 // take a new, free or expired lease (GetLease)
	OpRenew                    // the holder renews its lease (GetLease on a held lease, Renew)
	OpCheckpoint               // the holder writes its checkpoint (CheckpointSequence)
	OpRelease                  // the holder gives its lease up (RemoveLeaseOwner)
	OpClaim                    // ask the holder to hand its lease over (ClaimShard)
)

var opNames = [...]string{OpAcquire: "acquire", OpRenew: "renew", OpCheckpoint: "checkpoint", OpRelease: "release", OpClaim: "claim"}

// String returns the operation's name ("acquire", "renew", "checkpoint", "release", "claim").
func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Sentinel causes carried by *LeaseError; test with errors.Is.
var (
	// ErrLeaseLost: this worker no longer holds the lease (another worker took it over, or it
	// was released or deleted). Nothing was written; the caller must stop writing for the shard
	// and drop what it has not checkpointed: the new owner replays it.
	ErrLeaseLost = errors.New("lease lost")
	// ErrLeaseHeld: another worker holds the lease and it has not expired.
	ErrLeaseHeld = errors.New("lease held by another worker")
	// ErrLeaseClaimed: another worker claimed the lease (lease stealing). The holder stops
	// renewing and releases it once its consumer has stopped; until then it still holds the
	// lease (HeldUntil stays valid and checkpoints still succeed).
	ErrLeaseClaimed = errors.New("lease claimed by another worker")
	// ErrParentOpen: the shard is a child (split or merge) and one of its parents has not
	// reached SHARD_END yet; it is not leased before they all have (see Leasing).
	ErrParentOpen = errors.New("a parent shard has not reached SHARD_END")
	// ErrFairShare: this worker already holds its fair share of the open shards (see Leasing).
	ErrFairShare = errors.New("this worker holds its fair share of the shards")
)

// LeaseError reports a lease operation refused because of the lease's state. It wraps one of
// the sentinels above (ErrParentOpen and ErrFairShare only with Leasing), and also matches the library's
// checkpoint.ErrLeaseNotAcquired with errors.As, which keeps the library's event loop quiet
// about the ordinary outcome of competing for a lease.
type LeaseError struct {
	Op      Op // the operation refused
	ShardID string
	Owner   string // owner (or claimant) seen in the table; "" when free or unknown
	Err     error
}

// Error implements error.
func (e *LeaseError) Error() string {
	if e.Owner == "" {
		return fmt.Sprintf("%s lease %s: %v", e.Op, e.ShardID, e.Err)
	}
	return fmt.Sprintf("%s lease %s: %v (%s)", e.Op, e.ShardID, e.Err, e.Owner)
}

// Unwrap returns the sentinel cause.
func (e *LeaseError) Unwrap() error { return e.Err }

// As lets errors.As(err, &checkpoint.ErrLeaseNotAcquired{}) succeed, as the library's worker
// expects of a lease it could not get.
func (e *LeaseError) As(target any) bool {
	if t, ok := target.(*chk.ErrLeaseNotAcquired); ok {
		*t = chk.ErrLeaseNotAcquired{}
		return true
	}
	return false
}
