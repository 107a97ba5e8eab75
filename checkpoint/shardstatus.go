package checkpoint

import (
	"time"

	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
)

// This file is the adapter between rows and the library's in-memory shard status
// (partition.ShardStatus): what the library remembers of a shard is what the table holds, and
// ClaimRequest, which v1.0.0's event loop reads without the lock, is written only from the
// event loop's own calls.

// applyToShard copies a row into the library's shard status.
func (s *Store) applyToShard(shard *par.ShardStatus, l Lease) {
	s.mu.Lock()
	h, held := s.held[shard.ID]
	o := s.seen[shard.ID]
	s.mu.Unlock()
	var owner string
	var remaining time.Duration
	if held {
		owner = s.cfg.WorkerID
		remaining = s.cfg.FailoverTime - s.now().Sub(h.renewedAt)
	} else {
		if l.Owner != s.cfg.WorkerID {
			owner = l.Owner
		}
		remaining = s.cfg.FailoverTime - s.now().Sub(o.seenAt)
	}
	shard.Mux.Lock()
	defer shard.Mux.Unlock()
	shard.AssignedTo = owner
	if !held && shard.ClaimRequest != l.ClaimRequest {
		// v1.0.0's event loop reads ClaimRequest without the lock: write it only from the
		// event loop's own calls (shards not held) and only when it changes. For a held shard
		// the claim matters to this store alone, which reads it from the table.
		shard.ClaimRequest = l.ClaimRequest
	}
	shard.LeaseTimeout = time.Now().Add(remaining).UTC()
	shard.Checkpoint = l.Checkpoint
}

// setShardHeld marks shard as held by this store, with the local deadline as LeaseTimeout.
func (s *Store) setShardHeld(shard *par.ShardStatus) {
	s.mu.Lock()
	h := s.held[shard.ID]
	s.mu.Unlock()
	shard.Mux.Lock()
	defer shard.Mux.Unlock()
	shard.AssignedTo = s.cfg.WorkerID
	if shard.ClaimRequest != "" {
		// Only on acquisition (the event loop's goroutine): v1.0.0's event loop reads
		// ClaimRequest without the lock, so renewals and checkpoints (other goroutines) must
		// not write it, not even an unchanged "".
		shard.ClaimRequest = ""
	}
	shard.LeaseTimeout = time.Now().Add(s.cfg.FailoverTime - s.now().Sub(h.renewedAt)).UTC()
}

// restoreCheckpoint sets shard's checkpoint to the row's as this store last read or wrote it
// (after a failed checkpoint write). An ambiguous failure leaves the older value: a consumer
// started from it replays more, never less.
func (s *Store) restoreCheckpoint(shard *par.ShardStatus) {
	s.mu.Lock()
	o, ok := s.seen[shard.ID]
	s.mu.Unlock()
	if ok {
		shard.SetCheckpoint(o.checkpoint)
	}
}
