package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
	"go.uber.org/zap"
)

// Leader-assigned leases: the lease table's cost grows with the shards, not with
// shards × workers.
//
// Without a leader every worker Scans the whole table every shard_sync_interval, so the
// fleet reads workers × table size per interval. With Coordinate running:
//
//   - One worker, the holder of the lease on the row LeaderRow (fenced and renewed like a
//     shard lease), Scans the table every SyncInterval. It writes the plan into the rows
//     themselves: a free, missing or expired lease is transferred to the least loaded live
//     worker (AssignedTo and ClaimRequest set to it, LeaseCounter + 1, conditional on the state
//     it saw), and when the busiest worker holds two or more leases more than the least
//     loaded one, a lease of the busiest is claimed for the least loaded (ClaimRequest).
//   - Every worker reads only what concerns it: its own leases (renewals, as before) and, every
//     FailoverTime/3 (claimReadEvery), the rows whose ClaimRequest names it, through the sparse global
//     secondary index IndexClaims (a Query of a handful of items: half a read unit). A
//     transferred row is adopted (taken with a write conditional on the leader's state); a
//     claimed row held by another worker is watched (a consistent GetItem every 200 ms) until
//     its holder releases it, and taken at once.
//   - A holder that sees a claim on its lease keeps it for HandOverDelay more (so the
//     claimant is watching when it lets go), then releases it; a worker that drains (SIGTERM)
//     first claims each of its leases for a successor (HandOff) and lets go after the same
//     delay. The new owner starts within a watch period of the release, not at expiry.
//   - Non-leaders check the leader row every FailoverTime/2 and take it over when it is free
//     or has not moved for FailoverTime. Until a leader is known (fleet start, a table of old
//     workers) a worker falls back to the per-worker Scans and fair share of Leasing.
//
// The fleet's reads per minute: the leader's Scans (table size / 4 KB per SyncInterval),
// the renewals (one GetItem per lease per FailoverTime/4), plus half a unit per worker per
// FailoverTime/3 for the claim Query and half a unit per worker per FailoverTime/2 for the
// (eventually consistent) leader check: 12 units a minute per worker at the shipped 10 s, flat
// in the workers up to those, linear in the shards.
const (
	// LeaderRow is the lease table row whose lease makes a worker the leader. It is not a
	// shard: the library never lists it, and `status` does not show it.
	LeaderRow = "__leader__"
	// IndexClaims is the global secondary index on ClaimRequest (sparse: only rows with a
	// pending claim or transfer are in it). EnsureTable creates it.
	IndexClaims = "ClaimRequest-index"
	// watchPeriod is how often a worker reads a row it claimed until the holder lets go.
	watchPeriod = 200 * time.Millisecond
)

// coordination is the leader and claim state of a Store (leader.go), guarded by Store.mu.
type coordination struct {
	on          bool
	leader      bool
	leaderSt    *par.ShardStatus
	leaderAlive time.Time // when the leader row was last seen moving or held by us
	watch       map[string]time.Time
	claimSeen   map[string]claimSighting // held leases: the claim on each, and when it was first seen
	noIndex     bool                     // the claim index is missing: fall back to Scans
	me          presence                 // this worker's presence row (presence.go)
	unlisted    bool                     // a row naming this worker is not in the shard list yet
	suspected   bool                     // the leader row had not moved at the last check
	busyUntil   time.Time                // read claims every busyClaimReads until then (inboxEvery)
}

// claimSighting is a claim a holder has seen on one of its leases: who, and since when.
type claimSighting struct {
	claimant string
	at       time.Time
}

// HandOverDelay is how long a holder keeps a lease after it first sees a claim on it (or
// after HandOff claimed it), so that the claimant, which finds its claims every
// claimReadEvery, is watching the row when it is released.
func (s *Store) HandOverDelay() time.Duration { return s.claimReadEvery() + 500*time.Millisecond }

// claimReadEvery is how often a worker Queries the claim index for the rows naming it. It
// bounds how soon a transferred lease is adopted (after a failover: FailoverTime, the plan,
// then this) and sets the per-worker part of the fleet's reads (half a unit per Query).
func (s *Store) claimReadEvery() time.Duration { return s.cfg.FailoverTime / 3 }

// busyClaimReads is the claim read period of a busy worker (see inboxEvery).
const busyClaimReads = time.Second

// inboxEvery is the claim read period now: every second while this worker is busy (started,
// or last named on a row, less than 2 × FailoverTime ago: in a rolling restart the new workers
// are the successors of every hand-over, and a claim redirected to one of them while its
// holder lets go is found within a second instead of claimReadEvery), else claimReadEvery. A
// fleet at rest pays the slow rate only.
func (s *Store) inboxEvery() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.now().Before(s.coord.busyUntil) {
		return busyClaimReads
	}
	return s.claimReadEvery()
}

// leaderKnown reports whether a live leader (this store or another) coordinates the fleet,
// with s.mu held.
func (s *Store) leaderKnownLocked() bool {
	c := &s.coord
	if !c.on || c.noIndex {
		return false
	}
	return c.leader || (!c.leaderAlive.IsZero() && s.now().Sub(c.leaderAlive) < s.cfg.FailoverTime)
}

// Coordinate runs the leader election, the leader's plan and this worker's claim reads until
// ctx ends (see the comment above). worker.Run starts it when the store's lease policy is on.
func (s *Store) Coordinate(ctx context.Context) {
	s.mu.Lock()
	s.coord.on = true
	s.coord.watch = map[string]time.Time{}
	s.coord.claimSeen = map[string]claimSighting{}
	s.coord.leaderSt = &par.ShardStatus{ID: LeaderRow, Mux: &sync.RWMutex{}}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.coord.on, s.coord.leader = false, false
		s.mu.Unlock()
	}()
	tick := time.NewTicker(watchPeriod)
	defer tick.Stop()
	var lastLeader, lastInbox, lastPlan time.Time
	s.mu.Lock()
	s.coord.busyUntil = s.now().Add(2 * s.cfg.FailoverTime) // a new worker is where leases go
	s.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := s.now()
		s.mu.Lock()
		leader := s.coord.leader
		s.mu.Unlock()
		if leaderEvery := s.cfg.FailoverTime / 2; leader {
			leaderEvery = s.cfg.FailoverTime / 4
			if now.Sub(lastLeader) >= leaderEvery {
				lastLeader = now
				s.keepLeadership()
			}
		} else if now.Sub(lastLeader) >= leaderEvery {
			lastLeader = now
			s.checkLeader(ctx)
		}
		s.keepPresence(ctx)
		if now.Sub(lastInbox) >= s.inboxEvery() {
			lastInbox = now
			s.readClaims(ctx)
		}
		s.pollWatched(ctx)
		s.mu.Lock()
		leader, sync := s.coord.leader, s.leasing.SyncInterval
		s.mu.Unlock()
		if leader && now.Sub(lastPlan) >= sync {
			lastPlan = now
			if err := s.plan(ctx); err != nil {
				s.log.Warn("lease plan failed", zap.Error(err))
			}
		}
	}
}

// keepLeadership renews the leader row; a failure ends the leadership.
func (s *Store) keepLeadership() {
	err := s.Renew(s.coord.leaderSt)
	if err == nil {
		s.mu.Lock()
		s.coord.leaderAlive = s.now()
		s.mu.Unlock()
		return
	}
	var le *LeaseError
	if errors.As(err, &le) && errors.Is(err, ErrLeaseClaimed) {
		return // nobody claims the leader row; keep it
	}
	s.log.Warn("leadership lost", zap.Error(err))
	s.mu.Lock()
	s.coord.leader = false
	s.mu.Unlock()
}

// checkLeader reads the leader row and takes it when it is missing, free, or has not moved
// for FailoverTime (this store's observations).
func (s *Store) checkLeader(ctx context.Context) {
	err := s.onRow(LeaderRow, func(ctx context.Context, h heldLease, held bool) error {
		if held {
			return nil
		}
		// Every worker reads the leader row every FailoverTime/2: an eventually consistent
		// read (half a unit) keeps that part of the fleet's cost at a quarter unit per worker
		// per second. A stale answer can only make the leader look alive for a second longer;
		// before taking the row over, the worker reads it consistently.
		cur, ok, err := s.readLease(ctx, LeaderRow, false)
		if err != nil {
			return err
		}
		obs := s.observe(LeaderRow, cur, ok)
		alive := ok && cur.Owner != "" && s.now().Sub(obs.seenAt) < s.cfg.FailoverTime
		if alive {
			s.mu.Lock()
			s.coord.leaderAlive = obs.seenAt
			moved := s.now().Sub(obs.seenAt) < watchPeriod
			suspect := !moved && !s.coord.suspected
			s.coord.suspected = !moved
			s.mu.Unlock()
			if suspect {
				s.observeAll(ctx)
			}
			return nil
		}
		if cur, ok, err = s.getLease(ctx, LeaderRow); err != nil {
			return err
		}
		if obs := s.observe(LeaderRow, cur, ok); ok && cur.Owner != "" && s.now().Sub(obs.seenAt) < s.cfg.FailoverTime {
			s.mu.Lock()
			s.coord.leaderAlive = obs.seenAt
			s.mu.Unlock()
			return nil
		}
		if err := s.acquireFrom(ctx, s.coord.leaderSt, cur, ok); err != nil {
			return err
		}
		s.mu.Lock()
		s.coord.leader, s.coord.leaderAlive = true, s.now()
		s.mu.Unlock()
		s.log.Info("became the lease leader")
		return nil
	})
	var le *LeaseError
	if err != nil && !errors.As(err, &le) {
		s.log.Debug("leader check failed", zap.Error(err))
	}
}

// ShardListEvery is how often the worker should list the stream's shards, base being
// worker.shard_sync_interval: base for the leader and without a leader; FailoverTime for a
// follower, which needs the list only to start what the leader assigns it, unless a row
// naming it is a shard it has not listed yet (a new child), until it has. The fleet's
// ListShards rate then grows with the workers ten times slower (Kinesis allows 100 a second
// per stream).
func (s *Store) ShardListEvery(base time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.coord.leader || !s.leaderKnownLocked() || s.coord.unlisted {
		return base
	}
	return max(base, s.cfg.FailoverTime)
}

// observeAll Scans the table once (scanNow) to start this store's observations of every row:
// a follower does it when the leader row has not moved since its last check (the leader renews
// it every FailoverTime/4, the check runs every FailoverTime/2). Should the leader be dead and
// this worker take over, the leases of workers that died with it then expire FailoverTime
// after this read, not FailoverTime after its first plan: a failover that loses the leader
// takes about one failover_time more, not two. The observation is safe whatever happens next:
// a row still showing the counter seen here has not moved since.
func (s *Store) observeAll(ctx context.Context) {
	if err := s.scanNow(ctx); err != nil {
		s.log.Debug("cannot read the lease table while the leader looks stuck", zap.Error(err))
	}
}

// readClaims queries the claim index for the rows naming this worker: transfers to adopt,
// hand-overs to watch.
func (s *Store) readClaims(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.CallTimeout)
	defer cancel()
	in := &dynamodb.QueryInput{TableName: aws.String(s.cfg.Table), IndexName: aws.String(IndexClaims),
		KeyConditionExpression:    aws.String("#claim = :me"),
		ExpressionAttributeNames:  map[string]string{"#claim": AttrClaim},
		ExpressionAttributeValues: map[string]types.AttributeValue{":me": str(s.cfg.WorkerID)}}
	p := dynamodb.NewQueryPaginator(s.db, in)
	var rows []Lease
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			s.mu.Lock()
			if !s.coord.noIndex {
				s.log.Warn("cannot read the claim index: falling back to a Scan per worker", zap.String("index", IndexClaims), zap.Error(err))
			}
			s.coord.noIndex = true
			s.mu.Unlock()
			return
		}
		for _, item := range page.Items {
			l, err := parseLease(item)
			if err == nil {
				rows = append(rows, l)
			}
		}
	}
	s.mu.Lock()
	s.coord.noIndex = false
	s.coord.unlisted = false
	for _, l := range rows {
		if _, listed := s.topo[l.ShardID]; !listed && l.ShardID != LeaderRow {
			s.coord.unlisted = true // list the stream again at the next pass
		}
		if _, held := s.held[l.ShardID]; !held && l.ShardID != LeaderRow {
			s.coord.busyUntil = s.now().Add(2 * s.cfg.FailoverTime)
		}
	}
	s.mu.Unlock()
	for _, l := range rows {
		if l.ShardID == LeaderRow {
			continue
		}
		s.mu.Lock()
		_, held := s.held[l.ShardID]
		s.mu.Unlock()
		if held {
			continue
		}
		s.observe(l.ShardID, l, true)
		s.noteRow(l)
		if l.Owner != "" && l.Owner != s.cfg.WorkerID {
			s.mu.Lock()
			if _, ok := s.coord.watch[l.ShardID]; !ok {
				s.coord.watch[l.ShardID] = s.now()
			}
			s.mu.Unlock()
		}
	}
}

// pollWatched reads every claimed row whose holder has not let go yet.
func (s *Store) pollWatched(ctx context.Context) {
	s.mu.Lock()
	var ids []string
	for id, since := range s.coord.watch {
		if s.now().Sub(since) > 2*s.cfg.FailoverTime {
			delete(s.coord.watch, id) // the claim is stale: the leader will plan again
			continue
		}
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		l, ok, err := s.getLease(cctx, id)
		cancel()
		if err != nil {
			continue
		}
		done := !ok || l.ClaimRequest != s.cfg.WorkerID || l.Owner == "" || l.Owner == s.cfg.WorkerID
		if ok {
			s.observe(id, l, true)
			s.noteRow(l)
		}
		if done {
			s.mu.Lock()
			delete(s.coord.watch, id)
			s.mu.Unlock()
		}
	}
}

// holdClaimed reports whether the holder should keep renewing its lease on shardID although
// claimant claimed it: for HandOverDelay after it first saw this claimant's claim. A claim
// re-planned for another worker starts the delay again: the new claimant learns of it at its
// next claim read, and a release before then would leave the shard to wait for it.
func (s *Store) holdClaimed(shardID, claimant string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.coord.on {
		return false
	}
	seen, ok := s.coord.claimSeen[shardID]
	if !ok || seen.claimant != claimant {
		seen = claimSighting{claimant: claimant, at: s.now()}
		s.coord.claimSeen[shardID] = seen
	}
	return s.now().Sub(seen.at) < s.HandOverDelay()
}

// plan is the leader's pass: one Scan, then the transfers and claims described above.
func (s *Store) plan(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 4*s.cfg.CallTimeout)
	defer cancel()
	if err := s.scanNow(ctx); err != nil { // the leader's view is never older than SyncInterval
		return err
	}
	s.mu.Lock()
	if s.topo == nil {
		s.mu.Unlock()
		return nil // no shard list yet
	}
	// The live workers (presence.go): this one unless it drains, the owners of leases that have
	// not expired and the workers whose presence row moved, except those draining. A claimant
	// that is not live (killed, draining, or drained after it was named a successor) gets
	// nothing, and a row claimed for it is planned again at once.
	alive, stale := s.fleetLocked()
	live := func(w string) bool { return alive[w] }
	counts := map[string]int{}
	type move struct {
		id     string
		cur    Lease
		exists bool
		to     string
		claim  bool // a hand-over claim on a held row, not a transfer
	}
	var todo, leaving, reclaim []Lease
	var missing []string
	held := map[string][]string{}
	for id, parents := range s.topo {
		l, ok := s.view.rows[id]
		if ok && l.Closed() {
			continue
		}
		ready := true
		for _, p := range parents {
			ready = ready && s.finishedLocked(p)
		}
		if !ready {
			continue
		}
		_, mine := s.held[id]
		switch {
		case mine && ok && l.ClaimRequest != "" && l.ClaimRequest != s.cfg.WorkerID && live(l.ClaimRequest):
			counts[l.ClaimRequest]++ // our lease, being handed over (see below)
		case mine:
			counts[s.cfg.WorkerID]++
			held[s.cfg.WorkerID] = append(held[s.cfg.WorkerID], id)
		case !ok:
			missing = append(missing, id)
		case l.Owner == "" && (l.ClaimRequest == "" || !live(l.ClaimRequest) || s.expiredClaimLocked(l)):
			todo = append(todo, l)
		case l.Owner == "":
			counts[l.ClaimRequest]++ // a hand-over in progress
		case s.expiredLocked(l):
			todo = append(todo, l)
		case l.ClaimRequest == l.Owner && !live(l.Owner):
			// Transferred to a worker that is not live and never adopted it: transfer it again
			// now (conditional on the leader's own write: only one of the two can land).
			todo = append(todo, l)
		case !live(l.Owner) && (l.ClaimRequest == "" || !live(l.ClaimRequest)):
			// Held by a worker that drains, unclaimed or claimed for one that is gone: claim it
			// for a live one now (the holder lets go after the hand-over delay).
			leaving = append(leaving, l)
		case l.ClaimRequest != "" && l.ClaimRequest != l.Owner && !live(l.ClaimRequest):
			// Claimed for a worker that is gone or draining: claim it again for a live one at
			// once, before the holder lets go to a claimant that will never take it (the
			// holder waits the hand-over delay again for the new claimant).
			counts[l.Owner]++
			reclaim = append(reclaim, l)
		case l.ClaimRequest != "" && l.ClaimRequest != l.Owner:
			// A hand-over in progress counts for the claimant already: counted for the holder,
			// the claimant would look under-loaded for the seconds the hand-over takes and get
			// claim after claim, which later balancing passes move back (churn without end).
			counts[l.ClaimRequest]++
		default:
			counts[l.Owner]++
			if l.ClaimRequest == "" && l.Owner != s.cfg.WorkerID {
				held[l.Owner] = append(held[l.Owner], id)
			}
		}
	}
	s.mu.Unlock()
	least := func(not string) string { return leastLoaded(alive, counts, not) }
	var moves []move
	sort.Strings(missing)
	for _, id := range missing {
		if to := least(""); to != "" {
			counts[to]++
			moves = append(moves, move{id: id, to: to})
		}
	}
	// give hands each row of rows (free, expired, or held by a worker leaving) to the least
	// loaded live worker other than its owner: a transfer, or a hand-over claim.
	give := func(rows []Lease, claim bool) {
		sort.Slice(rows, func(i, j int) bool { return rows[i].ShardID < rows[j].ShardID })
		for _, l := range rows {
			if to := least(l.Owner); to != "" {
				counts[to]++
				moves = append(moves, move{id: l.ShardID, cur: l, exists: true, to: to, claim: claim})
			}
		}
	}
	give(todo, false)
	sort.Slice(reclaim, func(i, j int) bool { return reclaim[i].ShardID < reclaim[j].ShardID })
	for _, l := range reclaim {
		to := least(l.Owner)
		if to == "" || counts[l.Owner]-counts[to] < 2 {
			to = "" // no one to balance to any more: withdraw the claim
		} else {
			counts[l.Owner]--
			counts[to]++
		}
		moves = append(moves, move{id: l.ShardID, cur: l, exists: true, to: to, claim: true})
	}
	give(leaving, true)
	// Balance: move one lease at a time from the busiest to the least loaded, while they
	// differ by two or more (at most a few per pass: each is a hand-over).
	for range 8 {
		to := least("")
		from := ""
		for w, ids := range held {
			if len(ids) > 0 && (from == "" || counts[w] > counts[from] || counts[w] == counts[from] && w < from) {
				from = w
			}
		}
		if from == "" || to == "" || counts[from]-counts[to] < 2 {
			break
		}
		ids := held[from]
		sort.Strings(ids)
		id := ids[len(ids)-1]
		held[from] = ids[:len(ids)-1]
		s.mu.Lock()
		cur := s.view.rows[id]
		s.mu.Unlock()
		counts[from]--
		counts[to]++
		moves = append(moves, move{id: id, cur: cur, exists: true, to: to, claim: true})
	}
	for _, l := range stale {
		s.removePresence(ctx, l)
	}
	for _, m := range moves {
		var err error
		if m.claim {
			err = s.claimFor(ctx, m.cur, m.to)
		} else {
			err = s.transfer(ctx, m.id, m.cur, m.exists, m.to)
		}
		var ccf *types.ConditionalCheckFailedException
		if err != nil && !errors.As(err, &ccf) {
			return err
		}
	}
	return nil
}

// expiredClaimLocked reports whether a free row's claim has not moved for FailoverTime.
func (s *Store) expiredClaimLocked(l Lease) bool {
	o, ok := s.seen[l.ShardID]
	return ok && o.claim == l.ClaimRequest && o.counter == l.Counter && s.now().Sub(o.seenAt) >= s.cfg.FailoverTime
}

// transfer gives the lease on id to worker to: a new row, or the row cur (free or expired)
// with owner and claim set to to and the counter moved, conditional on cur's owner, counter
// and claim.
func (s *Store) transfer(ctx context.Context, id string, cur Lease, exists bool, to string) error {
	if !exists {
		s.mu.Lock()
		var parent string
		if ps := s.topo[id]; len(ps) > 0 {
			parent = ps[0]
		}
		s.mu.Unlock()
		item := map[string]types.AttributeValue{AttrShardID: str(id), AttrOwner: str(to), AttrCounter: num(1), AttrClaim: str(to),
			AttrLeaseTimeout: s.leaseTimeout()}
		if parent != "" {
			item[AttrParent] = str(parent)
		}
		return s.putRow(ctx, item)
	}
	names := map[string]string{"#owner": AttrOwner, "#counter": AttrCounter, "#claim": AttrClaim, "#lt": AttrLeaseTimeout}
	values := map[string]types.AttributeValue{":to": str(to), ":next": num(cur.Counter + 1), ":lt": s.leaseTimeout()}
	cond := "attribute_not_exists(#owner)"
	if cur.Owner != "" {
		cond = "#owner = :old"
		values[":old"] = str(cur.Owner)
	}
	if cur.Counter == 0 {
		cond += " AND attribute_not_exists(#counter)"
	} else {
		cond += " AND #counter = :n"
		values[":n"] = num(cur.Counter)
	}
	if cur.ClaimRequest == "" {
		cond += " AND attribute_not_exists(#claim)"
	} else {
		cond += " AND #claim = :claim"
		values[":claim"] = str(cur.ClaimRequest)
	}
	err := s.updateRow(ctx, id, "SET #owner = :to, #counter = :next, #claim = :to, #lt = :lt", cond, names, values)
	if err == nil {
		s.log.Debug("lease transferred", zap.String("shard_id", id), zap.String("from", cur.Owner), zap.String("to", to))
	}
	return err
}

// claimFor writes a hand-over claim for worker to on the held row cur.
// A claim already on the row (for a worker that is gone) is replaced, conditionally; to ""
// withdraws it.
func (s *Store) claimFor(ctx context.Context, cur Lease, to string) error {
	cond := "#owner = :owner AND #counter = :n AND attribute_not_exists(#claim)"
	values := map[string]types.AttributeValue{":owner": str(cur.Owner), ":n": num(cur.Counter)}
	if cur.ClaimRequest != "" {
		cond = "#owner = :owner AND #counter = :n AND #claim = :old"
		values[":old"] = str(cur.ClaimRequest)
	}
	update := "REMOVE #claim"
	if to != "" {
		update = "SET #claim = :to"
		values[":to"] = str(to)
	}
	return s.updateRow(ctx, cur.ShardID, update, cond,
		map[string]string{"#claim": AttrClaim, "#owner": AttrOwner, "#counter": AttrCounter}, values)
}

// HandOff marks this worker draining (presence.go) and claims each lease it holds for a
// successor: the least loaded other worker in one Scan, among the owners of leases and the
// workers whose presence row is recent and not draining, so that when the drain releases them
// the successors, which will be watching, take them at once. It returns how long the caller
// should keep the leases before releasing them (zero: nothing claimed).
func (s *Store) HandOff(ctx context.Context) time.Duration {
	s.mu.Lock()
	on := s.coord.on && !s.coord.noIndex
	s.mu.Unlock()
	if !on {
		return 0
	}
	s.markDraining(ctx)
	leases, err := s.ListLeases(ctx)
	if err != nil {
		s.log.Warn("hand-off: cannot read the lease table", zap.Error(err))
		return 0
	}
	counts := map[string]int{}
	draining := map[string]bool{s.cfg.WorkerID: true}
	var mine, named []Lease
	// A presence row is judged by the wall clock it carries (LeaseTimeout): this worker has no
	// observations of its own to judge expiry by, and a wrong guess only names a successor the
	// leader re-plans. Rows of workers that hold leases are not rewritten, so an old one counts
	// through those leases.
	wall := time.Now()
	s.mu.Lock()
	for _, l := range leases {
		if w, ok := presenceWorker(l.ShardID); ok {
			if l.State == stateDraining {
				draining[w] = true
			} else if l.LeaseTimeout.After(wall) {
				counts[w] += 0
			}
			continue
		}
		if !IsShardRow(l.ShardID) || l.Closed() || l.Owner == "" {
			continue
		}
		if h, held := s.held[l.ShardID]; held && l.Owner == s.cfg.WorkerID {
			l.Counter = h.counter // renewed since the Scan, maybe
			mine = append(mine, l)
			continue
		}
		if l.ClaimRequest == s.cfg.WorkerID {
			// Claimed or transferred to this worker, which will not take it now.
			named = append(named, l)
		}
		if l.Owner != s.cfg.WorkerID {
			counts[l.Owner]++
		}
	}
	s.mu.Unlock()
	for w := range draining {
		delete(counts, w)
	}
	if len(counts) == 0 {
		return 0
	}
	successor := func(not string) string { return leastLoaded(counts, counts, not) }
	n := 0
	for _, l := range mine {
		if l.ClaimRequest != "" && !draining[l.ClaimRequest] {
			continue
		}
		to := successor("")
		if err := s.claimFor(ctx, l, to); err == nil {
			counts[to]++
			n++
		}
	}
	// Pass on what was planned for this worker: a holder would otherwise let go to a claimant
	// that never takes the lease, and the shard would wait for the claim to expire.
	redirected := 0
	for _, l := range named {
		to := successor(l.Owner) // "" when the holder is the only one left: the claim is withdrawn
		var err error
		switch {
		case to == "" && (l.Owner == "" || l.Owner == s.cfg.WorkerID):
			continue // no one to pass it to: the leader plans it when it expires
		case l.Owner == "" || l.Owner == s.cfg.WorkerID:
			err = s.transfer(ctx, l.ShardID, l, true, to)
		default:
			err = s.claimFor(ctx, l, to)
		}
		if err == nil && to != "" {
			counts[to]++
		}
		if err == nil {
			redirected++
		}
	}
	s.log.Info("handing leases over before draining", zap.Int("leases", n), zap.Int("held", len(mine)),
		zap.Int("redirected", redirected))
	if n == 0 {
		return 0
	}
	return s.HandOverDelay()
}

// ResignLeadership releases the leader row if this store holds it (a draining worker), so
// that another worker takes the lead at its next check instead of after FailoverTime.
func (s *Store) ResignLeadership() {
	s.mu.Lock()
	_, held := s.held[LeaderRow]
	s.coord.leader = false
	s.mu.Unlock()
	if held {
		if err := s.RemoveLeaseOwner(LeaderRow); err != nil {
			s.log.Warn("cannot release the leader row", zap.Error(err))
		}
	}
}

// errNotAssigned is the refusal of a lease the leader has not assigned to this worker.
var errNotAssigned = fmt.Errorf("%w (the leader assigns leases)", ErrFairShare)

// leastLoaded returns the worker among the keys of among, other than not, that counts gives the
// fewest leases (ties to the smallest id, so every planner picks the same); "" when there is
// none.
func leastLoaded[V any](among map[string]V, counts map[string]int, not string) string {
	best := ""
	for w := range among {
		if w != not && (best == "" || counts[w] < counts[best] || counts[w] == counts[best] && w < best) {
			best = w
		}
	}
	return best
}
