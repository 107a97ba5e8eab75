package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
	"go.uber.org/zap"
)

// This file holds the fenced writes: a holder's renewals, checkpoints and releases, conditional
// on its owner name and the counter it last wrote, and the take-overs, conditional on the
// owner and counter the taker saw (see the state table in the package documentation).

// renew renews the lease h this store holds on shard: a re-read, then a fenced write unless
// the row shows another owner or counter (ErrLeaseLost) or another worker's claim
// (ErrLeaseClaimed, no write).
func (s *Store) renew(ctx context.Context, shard *par.ShardStatus, h heldLease) error {
	cur, ok, err := s.getLease(ctx, shard.ID)
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", shard.ID, err)
	}
	if ok && cur.Owner == s.cfg.WorkerID && cur.Counter == h.counter+1 && h.uncertain {
		// Our previous write failed ambiguously but committed. Adopt its counter and keep the
		// older renewedAt: we do not know when it committed, only that it was later.
		s.updateHeld(shard.ID, h.counter, func(hl *heldLease) { hl.counter, hl.uncertain = h.counter+1, false })
		h.counter, h.uncertain = h.counter+1, false
	}
	if !ok || cur.Owner != s.cfg.WorkerID || cur.Counter != h.counter {
		s.observe(shard.ID, cur, ok)
		return s.lost(OpRenew, shard.ID, cur.Owner)
	}
	if cur.ClaimRequest != "" && cur.ClaimRequest != s.cfg.WorkerID && !s.holdClaimed(shard.ID, cur.ClaimRequest) {
		// Hand over: stop renewing; the consumer fails and releases the lease once stopped.
		s.mu.Lock()
		if hl, ok := s.held[shard.ID]; ok && hl.claimedBy == "" {
			hl.claimedBy = cur.ClaimRequest
			s.held[shard.ID] = hl
			s.log.Info("lease claimed", zap.String("shard_id", shard.ID), zap.String("claimant", cur.ClaimRequest))
		}
		s.mu.Unlock()
		return &LeaseError{Op: OpRenew, ShardID: shard.ID, Owner: cur.ClaimRequest, Err: ErrLeaseClaimed}
	}
	if cur.ClaimRequest == "" {
		s.mu.Lock()
		delete(s.coord.claimSeen, shard.ID) // a claim withdrawn: a new one waits the full delay
		s.mu.Unlock()
	}
	if err := s.fencedUpdate(ctx, shard.ID, h, renewal()); err != nil {
		return err
	}
	s.setShardHeld(shard)
	return nil
}

// acquire takes the lease on shard, which this store does not hold, if its row allows it.
func (s *Store) acquire(ctx context.Context, shard *par.ShardStatus) error {
	if s.leasingOn() {
		// Decide from the lease view (one Scan per sync interval) and write conditionally
		// on the owner and counter it shows: a stale view only costs a refused write.
		cur, ok, err := s.admit(ctx, shard)
		if err != nil {
			return err
		}
		return s.acquireFrom(ctx, shard, cur, ok)
	}
	cur, ok, err := s.getLease(ctx, shard.ID)
	if err != nil {
		return fmt.Errorf("acquire lease %s: %w", shard.ID, err)
	}
	return s.acquireFrom(ctx, shard, cur, ok)
}

// acquireFrom takes the lease on shard if the row state cur (ok: the row exists) allows it,
// with a write conditional on exactly that state.
func (s *Store) acquireFrom(ctx context.Context, shard *par.ShardStatus, cur Lease, ok bool) error {
	obs := s.observe(shard.ID, cur, ok)
	expired := ok && s.now().Sub(obs.seenAt) >= s.cfg.FailoverTime
	me := s.cfg.WorkerID
	previous := priorHolder(cur, ok, me)
	next := cur.Counter + 1
	t0 := s.now() // before sending: the write commits after this, so t0+failover is conservative
	if err := s.take(ctx, shard, cur, ok, expired, next); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.coord.claimSeen, shard.ID)
	s.held[shard.ID] = heldLease{counter: next, renewedAt: t0}
	s.seen[shard.ID] = observation{owner: me, counter: next, checkpoint: cur.Checkpoint, seenAt: t0}
	s.mu.Unlock()
	prevOwner := cur.Owner
	cur.Owner, cur.Counter, cur.ClaimRequest = me, next, ""
	if !ok {
		cur.ShardID, cur.ParentShardID = shard.ID, shard.ParentShardId
	}
	s.noteRow(cur)
	s.setShardHeld(shard)
	// The library starts the consumer from this value: it must be the table's, "" included
	// (a stale value left by a failed checkpoint would skip records).
	shard.SetCheckpoint(cur.Checkpoint)
	s.metrics.acquired(previous)
	s.log.Info("lease acquired", zap.String("shard_id", shard.ID), zap.Int64("lease_counter", next),
		zap.String("previous_owner", prevOwner), zap.Bool("expired", expired && prevOwner != ""))
	return nil
}

// take writes the acquisition of shard as counter next, conditional on the row state cur
// (exists: the row exists; expired: unchanged for FailoverTime), or refuses it with a
// *LeaseError and writes nothing. A conditional failure is re-read: the row showing this very
// write (an SDK retry of a committed request) is success, anything else a race lost.
func (s *Store) take(ctx context.Context, shard *par.ShardStatus, cur Lease, exists, expired bool, next int64) error {
	me := s.cfg.WorkerID
	lt := s.leaseTimeout()
	var err error
	if !exists {
		item := map[string]types.AttributeValue{AttrShardID: str(shard.ID), AttrOwner: str(me), AttrCounter: num(next), AttrLeaseTimeout: lt}
		if shard.ParentShardId != "" {
			item[AttrParent] = str(shard.ParentShardId)
		}
		err = s.putRow(ctx, item)
	} else {
		cond, values, refused := takeCondition(shard.ID, cur, expired, me)
		if refused != nil {
			return refused
		}
		names := map[string]string{"#owner": AttrOwner, "#counter": AttrCounter, "#lt": AttrLeaseTimeout, "#claim": AttrClaim}
		values[":me"], values[":next"], values[":lt"] = str(me), num(next), lt
		update := "SET #owner = :me, #counter = :next, #lt = :lt"
		if shard.ParentShardId != "" && cur.ParentShardID == "" {
			update += ", #parent = :parent"
			names["#parent"] = AttrParent
			values[":parent"] = str(shard.ParentShardId)
		}
		update += " REMOVE #claim"
		err = s.updateRow(ctx, shard.ID, update, cond, names, values)
	}
	if err == nil {
		return nil
	}
	var ccf *types.ConditionalCheckFailedException
	if !errors.As(err, &ccf) {
		return fmt.Errorf("acquire lease %s: %w", shard.ID, err)
	}
	// Either another worker won the race, or an SDK retry of our own committed write.
	after, ok, rerr := s.getLease(ctx, shard.ID)
	if rerr == nil && ok && after.Owner == me && after.Counter == next {
		return nil
	}
	if rerr == nil {
		s.observe(shard.ID, after, ok)
		if ok {
			s.noteRow(after)
		}
	}
	return &LeaseError{Op: OpAcquire, ShardID: shard.ID, Owner: after.Owner, Err: ErrLeaseHeld}
}

// takeCondition returns the condition of me's acquisition of the existing row cur, with the
// values it names, or the refusal: a free row is taken unless another worker claimed it and
// the claim has not expired, a held row (ours from an earlier process included) only once
// expired.
func takeCondition(shardID string, cur Lease, expired bool, me string) (cond string, values map[string]types.AttributeValue, refused error) {
	values = map[string]types.AttributeValue{}
	switch {
	case cur.Owner == "" && (cur.ClaimRequest == "" || cur.ClaimRequest == me || expired):
		cond = "attribute_not_exists(#owner)"
	case cur.Owner == "":
		return "", nil, &LeaseError{Op: OpAcquire, ShardID: shardID, Owner: cur.ClaimRequest, Err: ErrLeaseClaimed}
	case cur.Owner == me && cur.ClaimRequest == me:
		// Transferred to us by the leader (leader.go): ours to adopt, not to wait out.
		cond = "#owner = :old AND #claim = :old"
		values[":old"] = str(me)
	case expired:
		cond = "#owner = :old"
		values[":old"] = str(cur.Owner)
	default:
		return "", nil, &LeaseError{Op: OpAcquire, ShardID: shardID, Owner: cur.Owner, Err: ErrLeaseHeld}
	}
	if cur.Counter == 0 {
		cond += " AND attribute_not_exists(#counter)"
	} else {
		cond += " AND #counter = :n"
		values[":n"] = num(cur.Counter)
	}
	return cond, values, nil
}

// fencedWrite is one write of a holder: fencedUpdate sends it conditional on AssignedTo = this
// worker AND LeaseCounter = the counter it last wrote, and sets the counter one higher.
type fencedWrite struct {
	op Op
	// update is the update expression; ":next" is the new counter, "#owner", "#counter" and
	// "#lt" are always defined, and ":lt" (a fresh informational timeout) unless releases.
	update string
	names  map[string]string
	values map[string]types.AttributeValue
	// releases: the write gives the lease up. It carries no timeout, the row it leaves has no
	// owner, and the held lease is not renewed.
	releases bool
	// shows reports whether a row re-read after a conditional failure holds this write's
	// fields beyond owner and counter; nil: nothing to check.
	shows func(Lease) bool
}

// renewal is the holder's renewal: the counter and the informational timeout.
func renewal() fencedWrite {
	return fencedWrite{op: OpRenew, update: "SET #counter = :next, #lt = :lt"}
}

// checkpointWrite writes checkpoint cp (and parent, when set), which also renews the lease.
func checkpointWrite(cp, parent string) fencedWrite {
	w := fencedWrite{
		op:     OpCheckpoint,
		update: "SET #cp = :cp, #cpt = :cpt, #counter = :next, #lt = :lt",
		names:  map[string]string{"#cp": AttrCheckpoint, "#cpt": AttrCheckpointTime},
		values: map[string]types.AttributeValue{":cp": str(cp), ":cpt": stamp(time.Now())},
		shows:  func(l Lease) bool { return l.Checkpoint == cp },
	}
	if parent != "" {
		w.update += ", #parent = :parent"
		w.names["#parent"] = AttrParent
		w.values[":parent"] = str(parent)
	}
	return w
}

// releaseWrite frees the lease; the ClaimRequest, if any, is kept for the claimant.
func releaseWrite() fencedWrite {
	return fencedWrite{op: OpRelease, update: "SET #counter = :next REMOVE #owner, #lt", releases: true,
		shows: func(l Lease) bool { return l.Owner == "" }}
}

// fencedUpdate sends w for the lease h this store holds on shardID. On success the held lease
// is renewed (unless w releases it).
//
// A conditional failure is re-read. If the row shows exactly this write and no earlier write
// is in doubt, it was an SDK retry of a committed request: success. If the row shows an
// earlier write of ours whose outcome was in doubt (it failed ambiguously), its counter is
// adopted, keeping the older renewal time, and the write is retried once. Anything else is a
// lost lease.
func (s *Store) fencedUpdate(ctx context.Context, shardID string, h heldLease, w fencedWrite) error {
	me := s.cfg.WorkerID
	n := map[string]string{"#owner": AttrOwner, "#counter": AttrCounter, "#lt": AttrLeaseTimeout}
	for k, v := range w.names {
		n[k] = v
	}
	for attempt := 0; ; attempt++ {
		next := h.counter + 1
		v := map[string]types.AttributeValue{":me": str(me), ":n": num(h.counter), ":next": num(next)}
		if !w.releases {
			v[":lt"] = s.leaseTimeout()
		}
		for k, x := range w.values {
			v[k] = x
		}
		t0 := s.now() // before sending: the write commits after this, so t0+failover is conservative
		err := s.updateRow(ctx, shardID, w.update, "#owner = :me AND #counter = :n", n, v)
		if err != nil {
			var ccf *types.ConditionalCheckFailedException
			if !errors.As(err, &ccf) {
				s.updateHeld(shardID, h.counter, func(hl *heldLease) { hl.uncertain = true })
				return fmt.Errorf("%s lease %s: %w", w.op, shardID, err)
			}
			cur, ok, rerr := s.getLease(ctx, shardID)
			if rerr != nil {
				// The refusal may be an SDK retry of this very write, applied with its answer
				// lost: in doubt, as after an ambiguous failure, so that the next write can
				// recognise it instead of taking our own write for another owner's.
				s.updateHeld(shardID, h.counter, func(hl *heldLease) { hl.uncertain = true })
				return fmt.Errorf("%s lease %s: re-read after conditional failure: %w", w.op, shardID, rerr)
			}
			ownWrite := ok && cur.Counter == next && (cur.Owner == me || w.releases)
			matches := ownWrite && (w.shows == nil || w.shows(cur))
			switch {
			case matches && !h.uncertain:
				// An SDK retry of this very write, which had committed.
			case ownWrite && cur.Owner == me && h.uncertain && attempt == 0:
				s.updateHeld(shardID, h.counter, func(hl *heldLease) { hl.counter, hl.uncertain = next, false })
				h.counter, h.uncertain = next, false
				continue
			default:
				s.observe(shardID, cur, ok)
				return s.lost(w.op, shardID, cur.Owner)
			}
		}
		if w.releases {
			return nil
		}
		s.updateHeld(shardID, h.counter, func(hl *heldLease) { hl.counter, hl.renewedAt, hl.uncertain = next, t0, false })
		s.mu.Lock()
		s.seen[shardID] = observation{owner: me, counter: next, checkpoint: s.seen[shardID].checkpoint, seenAt: t0}
		s.mu.Unlock()
		s.noteCounter(shardID, next)
		return nil
	}
}

// lost forgets a held lease and returns the ErrLeaseLost error for op.
func (s *Store) lost(op Op, shardID, owner string) error {
	if s.dropHeld(shardID) {
		s.log.Warn("lease lost", zap.String("shard_id", shardID), zap.Stringer("op", op), zap.String("owner", owner))
	}
	return &LeaseError{Op: op, ShardID: shardID, Owner: owner, Err: ErrLeaseLost}
}

// leaseTimeout is the informational LeaseTimeout a write carries: this machine's wall clock
// plus FailoverTime. Nothing decides on it (see Lease.LeaseTimeout).
func (s *Store) leaseTimeout() types.AttributeValue {
	return stamp(time.Now().Add(s.cfg.FailoverTime))
}

// claim writes this worker's ClaimRequest on shardID's row, conditional on the owner and
// counter just read, and returns the row as written. It refuses (ErrLeaseHeld, no write) a row
// that is missing, free, ours, finished, already claimed or never leased.
func (s *Store) claim(ctx context.Context, shardID string) (Lease, error) {
	me := s.cfg.WorkerID
	cur, ok, err := s.getLease(ctx, shardID)
	if err != nil {
		return Lease{}, fmt.Errorf("claim lease %s: %w", shardID, err)
	}
	if !ok || cur.Owner == "" || cur.Owner == me || cur.Closed() || cur.ClaimRequest != "" || cur.Counter == 0 {
		return Lease{}, &LeaseError{Op: OpClaim, ShardID: shardID, Owner: cur.Owner, Err: ErrLeaseHeld}
	}
	err = s.updateRow(ctx, shardID, "SET #claim = :me", "#owner = :owner AND #counter = :n AND attribute_not_exists(#claim)",
		map[string]string{"#claim": AttrClaim, "#owner": AttrOwner, "#counter": AttrCounter},
		map[string]types.AttributeValue{":me": str(me), ":owner": str(cur.Owner), ":n": num(cur.Counter)})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		// Either the row changed, or an SDK retry of our own applied write (its answer was
		// lost) found our claim: then the claim is made, and the holder will honour it.
		after, ok, rerr := s.getLease(ctx, shardID)
		if rerr == nil && ok && after.Owner == cur.Owner && after.Counter == cur.Counter && after.ClaimRequest == me {
			return after, nil
		}
		return Lease{}, &LeaseError{Op: OpClaim, ShardID: shardID, Owner: cur.Owner, Err: ErrLeaseHeld}
	}
	if err != nil {
		return Lease{}, fmt.Errorf("claim lease %s: %w", shardID, err)
	}
	cur.ClaimRequest = me
	return cur, nil
}
