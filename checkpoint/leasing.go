package checkpoint

import (
	"context"
	"fmt"
	"sort"
	"time"

	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
	"go.uber.org/zap"
)

// Leasing is the lease policy of a Store that a KCL worker uses (SetLeasing). The library
// (vmware-go-kcl-v2 v1.0.0) calls, on every pass of its event loop, FetchCheckpoint for each
// shard it does not hold, then GetLease on them until one succeeds (it starts one consumer per
// pass), then, with lease stealing on, ListActiveWorkers. With Leasing set, a Store answers
// all of that from one lease view, and decides which leases to take:
//
//   - The view is one paginated, consistent Scan of the table, reused for SyncInterval. Peek
//     (the event loop's fetch), acquisitions and ListActiveWorkers read it; an acquisition is
//     one write conditional on the owner and counter the view shows. Expiry is judged from the
//     Scans' observations, as before from GetItems. So the reads of a pass are one Scan
//     (ceil(table size / 1 MB) pages) whatever the shard count.
//   - A child shard (split or merge) is not leased until every parent (ParentShardId and
//     AdjacentParentShardId, from SetShards) has reached SHARD_END, or is gone from the
//     stream. Its consumer therefore never waits for a parent (the library's wait is neither
//     renewed nor interruptible).
//   - Fair share: a worker takes no lease beyond ceil(open shards / live workers), where the
//     open shards are the listed shards not at SHARD_END whose parents are finished, and the
//     live workers are this one plus the owners of unexpired leases. Claims hand-overs are
//     taken whatever the count.
//   - Stealing (ListActiveWorkers): at most one claim per StealInterval, only when no open
//     shard is free or expired, no claim of this worker is pending, this worker holds fewer
//     than floor(open/live) and the busiest worker more than that. Otherwise it reports no
//     workers, which the library reads as "nothing to steal" without logging.
type Leasing struct {
	// SyncInterval is the longest the lease view is reused before a new Scan; 0 turns the
	// policy off (each call reads its row, as the plain Checkpointer does).
	SyncInterval time.Duration
	// StealInterval is the shortest time between two claims of this worker; 0: never claim.
	StealInterval time.Duration
}

// ShardInfo is one shard of the stream as Kinesis lists it.
type ShardInfo struct {
	ID string
	// Parents holds the shard's ParentShardId and AdjacentParentShardId (a merge), when set.
	Parents []string
}

// SetLeasing sets the lease policy; call it before the worker starts.
func (s *Store) SetLeasing(l Leasing) {
	s.mu.Lock()
	s.leasing = l
	s.mu.Unlock()
}

func (s *Store) leasingOn() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leasing.SyncInterval > 0
}

// SetShards gives the store the stream's shard list (every shard ListShards returns, open or
// closed), for the parent rule and the fair share. Until it is called, a parent without a row
// counts as finished and there is no fair-share cap.
func (s *Store) SetShards(shards []ShardInfo) {
	topo := make(map[string][]string, len(shards))
	for _, sh := range shards {
		topo[sh.ID] = append([]string(nil), sh.Parents...)
	}
	s.mu.Lock()
	s.topo = topo
	s.mu.Unlock()
}

// leaseView is the table as the last Scan (plus this store's own writes since) showed it.
type leaseView struct {
	rows  map[string]Lease
	at    time.Time // s.now() just before the Scan was sent
	valid bool
}

// freshView refreshes the view with one paginated Scan unless it is younger than SyncInterval.
func (s *Store) freshView(ctx context.Context) error {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	s.mu.Lock()
	fresh := s.viewFreshLocked()
	s.mu.Unlock()
	if fresh {
		return nil
	}
	t0 := s.now()
	leases, err := s.ListLeases(ctx)
	if err != nil {
		return err
	}
	rows := make(map[string]Lease, len(leases))
	for _, l := range leases {
		rows[l.ShardID] = l
	}
	s.mu.Lock()
	for id, l := range rows {
		if old, ok := s.view.rows[id]; ok && old.Counter > l.Counter {
			rows[id] = old // this store wrote a newer state while the Scan ran
			continue
		}
		if _, held := s.held[id]; held {
			continue // our own writes keep our observation
		}
		s.observeLocked(id, l, true)
	}
	for id := range s.seen {
		if _, ok := rows[id]; !ok {
			if _, held := s.held[id]; !held {
				delete(s.seen, id)
			}
		}
	}
	s.view = leaseView{rows: rows, at: t0, valid: true}
	s.mu.Unlock()
	return nil
}

// scanNow refreshes the view with a Scan whatever its age (freshView's observations included).
func (s *Store) scanNow(ctx context.Context) error {
	s.mu.Lock()
	s.view.valid = false
	s.mu.Unlock()
	return s.freshView(ctx)
}

// viewFreshLocked reports whether the view can be used without a Scan (s.mu held): it is
// younger than SyncInterval, or a live leader coordinates and this worker is not it (its view
// is then kept up to date by its own writes and by the rows the claim index names it on, see
// leader.go).
func (s *Store) viewFreshLocked() bool {
	if !s.view.valid {
		return false
	}
	return s.now().Sub(s.view.at) < s.leasing.SyncInterval || s.leaderKnownLocked() && !s.coord.leader
}

// noteRow records a row state this store has just written or read in the view.
func (s *Store) noteRow(l Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.view.valid {
		return
	}
	if old, ok := s.view.rows[l.ShardID]; ok && old.Counter > l.Counter {
		return
	}
	s.view.rows[l.ShardID] = l
}

// noteCounter records a successful renewal of ours in the view.
func (s *Store) noteCounter(shardID string, counter int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.view.rows[shardID]; ok && s.view.valid && l.Counter < counter {
		l.Owner, l.Counter, l.ClaimRequest = s.cfg.WorkerID, counter, ""
		s.view.rows[shardID] = l
	}
}

// noteCheckpoint records a successful checkpoint of ours in the view.
func (s *Store) noteCheckpoint(shardID, cp string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.view.rows[shardID]; ok && s.view.valid {
		l.Checkpoint = cp
		s.view.rows[shardID] = l
	}
}

// noteReleased records our release (counter now counter) in the view and the observations.
func (s *Store) noteReleased(shardID string, counter int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.seen[shardID]
	s.seen[shardID] = observation{counter: counter, claim: o.claim, checkpoint: o.checkpoint, seenAt: s.now()}
	if l, ok := s.view.rows[shardID]; ok && s.view.valid && l.Counter < counter {
		l.Owner, l.Counter = "", counter
		s.view.rows[shardID] = l
	}
}

// Peek is FetchCheckpoint answered from the lease view (see Leasing): the library's event loop
// calls it for every shard it does not hold, on every pass. Without Leasing it is
// FetchCheckpoint.
func (s *Store) Peek(shard *par.ShardStatus) error {
	if !s.leasingOn() {
		return s.FetchCheckpoint(shard)
	}
	// The library calls this for every shard it does not hold, on every pass: the Scan's
	// context (a timer) is made only when the view is due for a Scan.
	s.mu.Lock()
	fresh := s.viewFreshLocked()
	s.mu.Unlock()
	if !fresh {
		ctx, cancel := context.WithTimeout(context.Background(), 2*s.cfg.CallTimeout)
		err := s.freshView(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("fetch checkpoint %s: %w", shard.ID, err)
		}
	}
	s.mu.Lock()
	l, ok := s.view.rows[shard.ID]
	s.mu.Unlock()
	if !ok {
		shard.Mux.Lock()
		shard.Checkpoint, shard.ClaimRequest = "", ""
		shard.Mux.Unlock()
		return chk.ErrSequenceIDNotFound
	}
	s.applyToShard(shard, l)
	if l.Checkpoint == "" {
		return chk.ErrSequenceIDNotFound
	}
	return nil
}

// admit applies the policy to an acquisition of shard and returns the view's row to write
// against, or a *LeaseError (no I/O besides a due Scan).
func (s *Store) admit(ctx context.Context, shard *par.ShardStatus) (Lease, bool, error) {
	if err := s.freshView(ctx); err != nil {
		return Lease{}, false, fmt.Errorf("acquire lease %s: %w", shard.ID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.admitLocked(shard)
}

// refuseEarly is the policy's answer to an acquisition of a shard this store does not hold,
// from a fresh view, before any row lock or I/O: the library asks for every shard it does not
// hold on every pass, and at a thousand shards the refusals are nearly all of its calls. nil:
// go on with the acquisition (which decides again, under the row's lock).
func (s *Store) refuseEarly(shard *par.ShardStatus) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leasing.SyncInterval <= 0 || !s.viewFreshLocked() {
		return nil
	}
	if _, held := s.held[shard.ID]; held {
		return nil
	}
	_, _, err := s.admitLocked(shard)
	return err
}

// admitLocked is admit's decision from the current view, with s.mu held.
func (s *Store) admitLocked(shard *par.ShardStatus) (Lease, bool, error) {
	refuse := func(err error, who string) (Lease, bool, error) {
		return Lease{}, false, &LeaseError{Op: OpAcquire, ShardID: shard.ID, Owner: who, Err: err}
	}
	cur, ok := s.view.rows[shard.ID]
	if ok && cur.Closed() {
		return refuse(ErrLeaseHeld, cur.Owner)
	}
	if s.leaderKnownLocked() {
		// The leader decided (parents finished, fair share): take what it assigned, only.
		if ok && cur.ClaimRequest == s.cfg.WorkerID && (cur.Owner == "" || cur.Owner == s.cfg.WorkerID) {
			return cur, ok, nil
		}
		return refuse(errNotAssigned, "")
	}
	for _, p := range s.parentsLocked(shard.ID, shard.ParentShardId) {
		if !s.finishedLocked(p) {
			return refuse(ErrParentOpen, p)
		}
	}
	if ok && cur.Owner == "" && cur.ClaimRequest == s.cfg.WorkerID {
		return cur, ok, nil // a hand-over to us: whatever our count
	}
	if target, mine := s.cachedShareLocked(); mine >= target {
		return refuse(ErrFairShare, "")
	}
	return cur, ok, nil
}

// shareMemo is the last fair share admit computed, and what it was computed from.
type shareMemo struct {
	at           time.Time // s.now() when computed
	viewAt       time.Time // the view it read
	held, topo   int
	target, mine int
}

// cachedShareLocked is shareLocked's target and count, reused for up to a lease pass while
// the view, the held leases and the shard list stay the same: the library asks for every
// shard it does not hold on every pass, and shareLocked walks every shard, so without it a
// pass costs shards² map lookups (a second of CPU a pass at a thousand shards). A share up
// to 50 ms stale only delays or advances one acquisition, which is conditional anyway.
func (s *Store) cachedShareLocked() (target, mine int) {
	m := s.share
	now := s.now()
	if now.Sub(m.at) < 50*time.Millisecond && m.viewAt.Equal(s.view.at) && m.held == len(s.held) && m.topo == len(s.topo) {
		return m.target, m.mine
	}
	target, mine, _, _ = s.shareLocked()
	s.share = shareMemo{at: now, viewAt: s.view.at, held: len(s.held), topo: len(s.topo), target: target, mine: mine}
	return target, mine
}

// parentsLocked returns the parents of shard id: from the shard list, else the library's
// status.
func (s *Store) parentsLocked(id, parent string) []string {
	if ps, ok := s.topo[id]; ok {
		return ps
	}
	if parent != "" {
		return []string{parent}
	}
	return nil
}

// finishedLocked reports whether shard id needs no more processing before its children: its
// row is at SHARD_END, or it is gone from the stream (not listed, or, without a shard list,
// without a row).
func (s *Store) finishedLocked(id string) bool {
	if s.topo != nil {
		if _, listed := s.topo[id]; !listed {
			return true
		}
	}
	l, ok := s.view.rows[id]
	if !ok {
		return s.topo == nil
	}
	return l.Closed()
}

// expiredLocked reports whether row l (as in the view) has not moved for FailoverTime.
func (s *Store) expiredLocked(l Lease) bool {
	o, ok := s.seen[l.ShardID]
	if !ok || o.owner != l.Owner || o.counter != l.Counter {
		return false
	}
	return s.now().Sub(o.seenAt) >= s.cfg.FailoverTime
}

// shareLocked computes the fair share: the open shards (listed, not at SHARD_END, parents
// finished), the live workers' counts among them (this worker's = the leases it holds), and
// target = ceil(open / live workers). pending counts open shards that are free or expired
// (a take-over is due). Without a shard list the target is unbounded.
func (s *Store) shareLocked() (target, mine, pending int, counts map[string][]string) {
	me := s.cfg.WorkerID
	counts = map[string][]string{me: nil}
	if s.topo == nil {
		return int(^uint(0) >> 1), 0, 0, counts
	}
	open := 0
	for id, parents := range s.topo {
		if l, ok := s.view.rows[id]; ok && l.Closed() {
			continue
		}
		ready := true
		for _, p := range parents {
			ready = ready && s.finishedLocked(p)
		}
		if !ready {
			continue
		}
		open++
		if _, held := s.held[id]; held {
			counts[me] = append(counts[me], id)
			continue
		}
		l, ok := s.view.rows[id]
		switch {
		case !ok || l.Owner == "" || s.expiredLocked(l):
			if !ok || l.ClaimRequest == "" || l.ClaimRequest == me {
				pending++
			}
		case l.Owner == me:
			// An earlier process under our id (or a lease we abandoned): it expires.
		default:
			counts[l.Owner] = append(counts[l.Owner], id)
		}
	}
	target = (open + len(counts) - 1) / len(counts)
	return target, len(counts[me]), pending, counts
}

// stealView implements ListActiveWorkers with Leasing (see Leasing).
func (s *Store) stealView(ctx context.Context, shardStatus map[string]*par.ShardStatus) (map[string][]*par.ShardStatus, error) {
	if err := s.freshView(ctx); err != nil {
		return nil, err
	}
	none := map[string][]*par.ShardStatus{}
	s.mu.Lock()
	led := s.leaderKnownLocked()
	s.mu.Unlock()
	if led {
		// The leader balances (claims for the least loaded worker), and the pass's Peeks have
		// updated every status already: at a thousand shards this loop was a second copy of
		// the view on every pass of every worker.
		return none, nil
	}
	// Copy the rows out under the lock: renewals and checkpoints (the consumers' goroutines)
	// write the view's map concurrently, and applyToShard takes s.mu itself.
	type update struct {
		st *par.ShardStatus
		l  Lease
	}
	var updates []update
	s.mu.Lock()
	for id, st := range shardStatus {
		if _, mine := s.held[id]; !mine {
			if l, ok := s.view.rows[id]; ok {
				updates = append(updates, update{st, l})
			}
		}
	}
	s.mu.Unlock()
	for _, u := range updates {
		s.applyToShard(u.st, u.l)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leasing.StealInterval <= 0 || (!s.lastClaim.IsZero() && s.now().Sub(s.lastClaim) < s.leasing.StealInterval) {
		return none, nil
	}
	for _, l := range s.view.rows {
		if l.ClaimRequest == s.cfg.WorkerID && !l.Closed() {
			return none, nil // our hand-over is still in progress
		}
	}
	_, mine, pending, counts := s.shareLocked()
	if pending > 0 {
		return none, nil // take free and expired leases first
	}
	open := 0
	for _, ids := range counts {
		open += len(ids)
	}
	floor := open / len(counts)
	var busiest string
	for w, ids := range counts {
		if w != s.cfg.WorkerID && len(ids) > floor && (busiest == "" || len(ids) > len(counts[busiest]) ||
			len(ids) == len(counts[busiest]) && w < busiest) {
			busiest = w
		}
	}
	if mine >= floor || busiest == "" {
		return none, nil
	}
	// Report only this worker and the busiest one: the library then claims one of the
	// busiest's shards (the two differ by two or more, so the library's own test agrees).
	out := map[string][]*par.ShardStatus{}
	for _, w := range []string{s.cfg.WorkerID, busiest} {
		ids := append([]string(nil), counts[w]...)
		sort.Strings(ids)
		for _, id := range ids {
			if st, ok := shardStatus[id]; ok {
				out[w] = append(out[w], st)
			}
		}
	}
	s.log.Debug("rebalancing", zap.Int("open_shards", open), zap.Int("workers", len(counts)), zap.Int("held", mine),
		zap.String("busiest", busiest), zap.Int("busiest_held", len(counts[busiest])))
	return out, nil
}
