package checkpoint

import (
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
)

// Attribute names of the lease table. The key and the attributes the library's own
// DynamoCheckpoint defined keep its names; LeaseCounter is ours (the fencing token).
const (
	AttrShardID      = chk.LeaseKeyKey       // S, hash key: the Kinesis shard id
	AttrOwner        = chk.LeaseOwnerKey     // S "AssignedTo": worker id of the holder; absent when free
	AttrCounter      = "LeaseCounter"        // N: incremented by every write of the holder and every take-over
	AttrCheckpoint   = chk.SequenceNumberKey // S "Checkpoint": last durable sequence number or SHARD_END
	AttrParent       = chk.ParentShardIdKey  // S "ParentShardId": parent shard id after a split or merge
	AttrClaim        = chk.ClaimRequestKey   // S "ClaimRequest": worker id asking the holder to hand over
	AttrLeaseTimeout = chk.LeaseTimeoutKey   // S "LeaseTimeout": informational only (writer's wall clock + failover time, RFC 3339)
	// AttrCheckpointTime is informational only: the checkpoint writer's wall clock (RFC 3339),
	// for the checkpoint age `recstream status` shows.
	AttrCheckpointTime = "CheckpointTime"
)

// ShardEnd is the checkpoint of a shard whose records have all been processed (the library's value).
const ShardEnd = chk.ShardEnd

// Lease is one row of the lease table as ListLeases reports it.
type Lease struct {
	ShardID       string
	Owner         string // worker id of the holder; "" when the lease is free
	Counter       int64  // fencing token; 0 when the row has never been leased by this store
	Checkpoint    string // last checkpointed sequence number, ShardEnd, or "" for none
	ParentShardID string // "" for a shard without parent
	ClaimRequest  string // worker id that asked the holder to hand the lease over; "" for none
	// LeaseTimeout is the last writer's wall clock plus its failover time. Informational only
	// (shown by `status`): expiry is never judged from it, because it comes from another
	// machine's clock.
	LeaseTimeout time.Time
	// CheckpointTime is the wall clock of the worker that wrote Checkpoint, when it wrote it;
	// zero when unknown. Informational only (the checkpoint age `status` shows).
	CheckpointTime time.Time
	// State is a presence row's AttrWorkerState ("draining" or ""); empty for a shard's lease.
	State string
}

// Closed reports whether the shard was processed to its end (checkpoint SHARD_END).
func (l Lease) Closed() bool { return l.Checkpoint == ShardEnd }

// parseLease decodes one table item; a wrongly typed attribute is an error naming it.
func parseLease(item map[string]types.AttributeValue) (Lease, error) {
	var l Lease
	str := func(name string, dst *string) error {
		v, ok := item[name]
		if !ok {
			return nil
		}
		s, ok := v.(*types.AttributeValueMemberS)
		if !ok {
			return fmt.Errorf("attribute %s: want type S, got %T", name, v)
		}
		*dst = s.Value
		return nil
	}
	if err := str(AttrShardID, &l.ShardID); err != nil {
		return Lease{}, err
	}
	if l.ShardID == "" {
		return Lease{}, fmt.Errorf("attribute %s: missing", AttrShardID)
	}
	var lt, cpt string
	for _, f := range []struct {
		name string
		dst  *string
	}{{AttrOwner, &l.Owner}, {AttrCheckpoint, &l.Checkpoint}, {AttrParent, &l.ParentShardID}, {AttrClaim, &l.ClaimRequest},
		{AttrLeaseTimeout, &lt}, {AttrCheckpointTime, &cpt}, {AttrWorkerState, &l.State}} {
		if err := str(f.name, f.dst); err != nil {
			return Lease{}, fmt.Errorf("lease %s: %w", l.ShardID, err)
		}
	}
	if v, ok := item[AttrCounter]; ok {
		n, ok := v.(*types.AttributeValueMemberN)
		if !ok {
			return Lease{}, fmt.Errorf("lease %s: attribute %s: want type N, got %T", l.ShardID, AttrCounter, v)
		}
		c, err := strconv.ParseInt(n.Value, 10, 64)
		if err != nil || c < 0 {
			return Lease{}, fmt.Errorf("lease %s: attribute %s: want a non-negative integer, got %q", l.ShardID, AttrCounter, n.Value)
		}
		l.Counter = c
	}
	if lt != "" {
		// Informational: a row written by another tool may carry anything here.
		if t, err := time.Parse(time.RFC3339Nano, lt); err == nil {
			l.LeaseTimeout = t
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, cpt); cpt != "" && err == nil {
		l.CheckpointTime = t
	}
	return l, nil
}
