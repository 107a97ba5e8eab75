package checkpoint

import (
	"context"
	"fmt"

	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
	"go.uber.org/zap"
)

// Store implements chk.Checkpointer.
var _ chk.Checkpointer = (*Store)(nil)

// Init creates the table if needed and waits for it to be ACTIVE (bounded by CreateTimeout).
// The library's worker calls it from Start.
func (s *Store) Init() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CreateTimeout)
	defer cancel()
	return s.EnsureTable(ctx)
}

// GetLease acquires the lease on shard for owner (which must be this store's WorkerID), or
// renews it when this store already holds it. The library calls it from its event loop
// (acquire) and every LeaseRefreshWaitTime from each shard consumer (renew).
//
// Acquire succeeds when the row is new, free (and not claimed by another worker), or expired
// (counter unchanged for FailoverTime on this store's clock); otherwise it returns a
// *LeaseError wrapping ErrLeaseHeld. Renew fails with ErrLeaseLost when the row is no longer
// ours, and with ErrLeaseClaimed (no write) when another worker claimed it. On success shard's
// AssignedTo, LeaseTimeout (local estimate) and ClaimRequest are updated.
func (s *Store) GetLease(shard *par.ShardStatus, owner string) error {
	if owner != s.cfg.WorkerID {
		return fmt.Errorf("get lease %s: owner %q is not this store's worker id %q", shard.ID, owner, s.cfg.WorkerID)
	}
	if err := s.refuseEarly(shard); err != nil {
		return err
	}
	return s.onRow(shard.ID, func(ctx context.Context, h heldLease, held bool) error {
		if held {
			return s.renew(ctx, shard, h)
		}
		return s.acquire(ctx, shard)
	})
}

// Renew renews this store's lease on shard, like GetLease on a held lease, but never
// acquires: a lease not held (released, abandoned or lost meanwhile) gives a *LeaseError
// wrapping ErrLeaseLost and writes nothing. Retrying a failed renewal with it cannot take a
// lease back that this worker has let go of.
func (s *Store) Renew(shard *par.ShardStatus) error {
	return s.onRow(shard.ID, func(ctx context.Context, h heldLease, held bool) error {
		if !held {
			return &LeaseError{Op: OpRenew, ShardID: shard.ID, Err: ErrLeaseLost}
		}
		return s.renew(ctx, shard, h)
	})
}

// CheckpointSequence writes shard's checkpoint (shard.GetCheckpoint(); SHARD_END after the
// processor's Checkpoint(nil)) fenced on this store's lease. The record processor's
// Checkpoint calls it. A lease not held (or taken over meanwhile) gives a *LeaseError
// wrapping ErrLeaseLost and writes nothing. A successful checkpoint also renews the lease.
func (s *Store) CheckpointSequence(shard *par.ShardStatus) error {
	cp := shard.GetCheckpoint()
	if cp == "" {
		return fmt.Errorf("checkpoint %s: empty sequence number", shard.ID)
	}
	return s.onRow(shard.ID, func(ctx context.Context, h heldLease, held bool) error {
		if !held {
			s.restoreCheckpoint(shard)
			return s.lost(OpCheckpoint, shard.ID, "")
		}
		if err := s.fencedUpdate(ctx, shard.ID, h, checkpointWrite(cp, shard.ParentShardId)); err != nil {
			// The library set the shard status to cp before calling: give it the table's value
			// back, so that nothing (a later acquisition by this process, the SHARD_END test of
			// its event loop) acts on a checkpoint that was never written.
			s.restoreCheckpoint(shard)
			return err
		}
		s.mu.Lock()
		if o, ok := s.seen[shard.ID]; ok && o.owner == s.cfg.WorkerID {
			o.checkpoint = cp
			s.seen[shard.ID] = o
		}
		s.mu.Unlock()
		s.noteCheckpoint(shard.ID, cp)
		s.setShardHeld(shard)
		return nil
	})
}

// FetchCheckpoint reads shard's row into shard: Checkpoint ("" when the row has none, so that
// the status never keeps a value the table does not hold), AssignedTo (our id
// only while this store holds the lease, so that the library retries a row left under our
// name by an earlier process), ClaimRequest and LeaseTimeout (a local estimate of when this
// store would consider the lease expired). A missing row or checkpoint returns
// chk.ErrSequenceIDNotFound unwrapped, as the library compares it with ==.
//
// The library's waitOnParentShard probes the parent with a bare ShardStatus (no
// StartingSequenceNumber); for such a probe an existing parent row without checkpoint returns
// nil with an empty Checkpoint, so the child keeps waiting instead of starting early (the
// library would take the sentinel for "parent deleted").
func (s *Store) FetchCheckpoint(shard *par.ShardStatus) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
	defer cancel()
	cur, ok, err := s.getLease(ctx, shard.ID)
	if err != nil {
		return fmt.Errorf("fetch checkpoint %s: %w", shard.ID, err)
	}
	if !ok {
		return chk.ErrSequenceIDNotFound
	}
	s.observe(shard.ID, cur, true)
	s.applyToShard(shard, cur)
	if cur.Checkpoint == "" {
		if shard.StartingSequenceNumber == "" {
			return nil
		}
		return chk.ErrSequenceIDNotFound
	}
	return nil
}

// RemoveLeaseOwner releases this store's lease on shardID (fenced), so any worker may take
// it at once. The library calls it when a shard consumer stops; callers must have stopped
// writing for the shard, since the lease is no longer held from the moment this is called
// (HeldUntil reports false). The ClaimRequest, if any, is kept so the claimant gets the
// lease. Releasing a lease not held returns a *LeaseError wrapping ErrLeaseLost.
func (s *Store) RemoveLeaseOwner(shardID string) error {
	return s.onRow(shardID, func(ctx context.Context, h heldLease, held bool) error {
		if !held {
			return s.lost(OpRelease, shardID, "")
		}
		// Drop first: from here on a take-over is legitimate.
		s.dropHeld(shardID)
		if err := s.fencedUpdate(ctx, shardID, h, releaseWrite()); err != nil {
			return err
		}
		s.noteReleased(shardID, h.counter+1)
		s.log.Info("lease released", zap.String("shard_id", shardID), zap.Int64("lease_counter", h.counter+1))
		return nil
	})
}

// Abandon forgets this store's lease on shardID without writing anything: the row keeps this
// worker's name and its counter stops moving, so every worker (this one included) waits
// FailoverTime after the last write before taking it. Use it instead of RemoveLeaseOwner when
// a write made under the lease may still be in flight (an upload cancelled on the client may
// still commit on the server): a release would let a new owner start at once. HeldUntil
// reports false from now on, and checkpoints fail with ErrLeaseLost.
func (s *Store) Abandon(shardID string) {
	// No lockShard: a renewal in flight may still commit (it only moves the expiry later,
	// which is safe) but cannot resurrect the held entry (updateHeld needs it).
	if s.dropHeld(shardID) {
		s.log.Info("lease abandoned, left to expire", zap.String("shard_id", shardID))
	}
}

// RemoveLeaseInfo deletes shardID's row. The library calls it for shards Kinesis no longer
// lists. Only a free or finished (SHARD_END) row is deleted: a conditional failure is an
// error, so a glitch in shard listing cannot erase a live lease and its checkpoint.
func (s *Store) RemoveLeaseInfo(shardID string) error {
	return s.onRow(shardID, func(ctx context.Context, _ heldLease, _ bool) error {
		if err := s.deleteRow(ctx, shardID); err != nil {
			return fmt.Errorf("remove lease %s: %w", shardID, err)
		}
		s.dropHeld(shardID)
		s.mu.Lock()
		delete(s.seen, shardID)
		s.mu.Unlock()
		return nil
	})
}

// GetLeaseOwner returns the owner recorded for shardID, or chk.NoLeaseOwnerErr when the row
// is missing or free.
func (s *Store) GetLeaseOwner(shardID string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
	defer cancel()
	cur, ok, err := s.getLease(ctx, shardID)
	if err != nil {
		return "", fmt.Errorf("get lease owner %s: %w", shardID, err)
	}
	if !ok || cur.Owner == "" {
		return "", chk.NoLeaseOwnerErr
	}
	return cur.Owner, nil
}

// ListActiveWorkers scans the table (paginated) and returns, for the shards in shardStatus
// that are not finished, the worker each belongs to: the claimant for a claimed shard (a
// hand-over in progress), else the owner. It refreshes each status as FetchCheckpoint does.
// When a shard has no owner and no claim it returns chk.ErrShardNotAssigned, as the library's
// rebalance expects (no stealing while leases are still free). The library calls it from its
// event loop when lease stealing is enabled.
func (s *Store) ListActiveWorkers(shardStatus map[string]*par.ShardStatus) (map[string][]*par.ShardStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.cfg.CallTimeout)
	defer cancel()
	if s.leasingOn() {
		return s.stealView(ctx, shardStatus)
	}
	leases, err := s.ListLeases(ctx)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]Lease, len(leases))
	for _, l := range leases {
		byID[l.ShardID] = l
	}
	workers := map[string][]*par.ShardStatus{}
	unassigned := false
	for id, st := range shardStatus {
		l, ok := byID[id]
		_, mine := s.heldLease(id)
		if ok {
			s.observe(id, l, true)
			if !mine {
				// A held shard's status belongs to its running consumer: its Checkpoint may be
				// ahead of the table (set just before CheckpointSequence writes it).
				s.applyToShard(st, l)
			}
		}
		if l.Closed() || st.GetCheckpoint() == ShardEnd {
			continue
		}
		w := l.Owner
		if mine {
			w = s.cfg.WorkerID
		}
		if l.ClaimRequest != "" {
			w = l.ClaimRequest
		}
		if w == "" {
			unassigned = true
			continue
		}
		workers[w] = append(workers[w], st)
	}
	if unassigned {
		return nil, chk.ErrShardNotAssigned
	}
	return workers, nil
}

// ClaimShard asks the current holder of shard to hand it over to claimID (this store's
// WorkerID): a conditional write of ClaimRequest on the owner and counter just read, only when
// the row is held by another worker, not finished and not already claimed. Conflicts return a
// *LeaseError (which the library's rebalance logs and retries later). The library's rebalance
// calls it when lease stealing is enabled.
func (s *Store) ClaimShard(shard *par.ShardStatus, claimID string) error {
	if claimID != s.cfg.WorkerID {
		return fmt.Errorf("claim lease %s: claimant %q is not this store's worker id %q", shard.ID, claimID, s.cfg.WorkerID)
	}
	return s.onRow(shard.ID, func(ctx context.Context, _ heldLease, _ bool) error {
		cur, err := s.claim(ctx, shard.ID)
		if err != nil {
			return err
		}
		s.observe(shard.ID, cur, true)
		s.noteRow(cur)
		s.mu.Lock()
		s.lastClaim = s.now()
		s.mu.Unlock()
		s.metrics.Claims.Inc()
		shard.Mux.Lock()
		shard.ClaimRequest = claimID
		shard.Mux.Unlock()
		s.log.Info("claimed lease", zap.String("shard_id", shard.ID), zap.String("owner", cur.Owner))
		return nil
	})
}
