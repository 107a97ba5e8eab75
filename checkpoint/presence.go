package checkpoint

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"go.uber.org/zap"
)

// Worker presence: how the leader knows the workers that hold nothing, and the ones leaving.
//
// The leader plans for the live workers. A worker that holds leases shows it is alive by
// renewing them; one that holds none (just started, or one of more workers than shards) was
// invisible, so the leader never gave it anything: during a rolling restart every new worker
// idled while the old ones still running took all the leases, and the last old one had no
// successor to hand its leases to. And a draining worker (SIGTERM) keeps its leases for the
// hand-over delay, so it looked alive and least loaded, and was given leases it would never
// take: the shard then waited for the claim to expire.
//
// So a worker that holds no shard lease keeps a presence row, WorkerRowPrefix + its id, owned
// by it: written when it has no shard lease, rewritten every FailoverTime/4 while that lasts,
// and deleted once it holds one (it is then seen through its renewals, and the leader's Scans
// do not carry a row per worker: in a fleet with at least as many shards as workers presence
// costs two writes per worker start). A draining worker writes its row marked draining
// (AttrWorkerState) when it starts handing its leases over, and deletes it when it stops. The
// leader counts a worker live when one of its leases or its presence row has moved within
// FailoverTime (its own observations, as for expiry), and never while its presence row says
// draining; it deletes presence rows that have expired when their worker holds no lease.
// Only the leader Scans, so presence adds no reads but the few rows in its Scans.
const (
	// WorkerRowPrefix starts the key of a worker's presence row; the rest is the worker id.
	WorkerRowPrefix = "__worker__/"
	// AttrWorkerState is the presence row's state: absent, or stateDraining.
	AttrWorkerState = "WorkerState"
	stateDraining   = "draining"
)

// IsShardRow reports whether a lease table row is a shard's lease, as opposed to the leader
// row or a worker's presence row (which `status` and the hand-off ignore).
func IsShardRow(id string) bool {
	return id != LeaderRow && !strings.HasPrefix(id, WorkerRowPrefix)
}

// presenceWorker returns the worker id of a presence row's key.
func presenceWorker(id string) (string, bool) { return strings.CutPrefix(id, WorkerRowPrefix) }

// presence is this store's presence row state, guarded by Store.mu.
type presence struct {
	mu       sync.Mutex // serialises the row's writes (decision and write): held without Store.mu
	counter  int64      // the last counter written
	written  time.Time  // when it was last written (s.now())
	exists   bool       // written and not deleted since
	draining bool
}

// holdsShardLocked reports whether this store holds a shard lease (the leader row aside).
func (s *Store) holdsShardLocked() bool {
	for id := range s.held {
		if IsShardRow(id) {
			return true
		}
	}
	return false
}

// keepPresence writes this worker's presence row while it holds no shard lease (at once, then
// every FailoverTime/4), and deletes it once it holds one.
func (s *Store) keepPresence(ctx context.Context) {
	s.coord.me.mu.Lock()
	defer s.coord.me.mu.Unlock()
	s.mu.Lock()
	holds, draining, exists, written := s.holdsShardLocked(), s.coord.me.draining, s.coord.me.exists, s.coord.me.written
	s.mu.Unlock()
	switch {
	case draining:
	case holds && exists:
		s.retire(ctx)
	case !holds && (!exists || s.now().Sub(written) >= s.cfg.FailoverTime/4):
		s.announce(ctx)
	}
}

// announce writes this worker's presence row (unconditionally: only this worker writes it,
// and the leader deletes it only when it has expired), with s.coord.me.mu held.
func (s *Store) announce(ctx context.Context) {
	s.mu.Lock()
	if s.coord.me.counter == 0 {
		// A process restarted under the same worker id must not write a counter the leader
		// saw before (it would look unchanged): start from the wall clock.
		s.coord.me.counter = time.Now().UnixMilli()
	}
	s.coord.me.counter++
	n, draining := s.coord.me.counter, s.coord.me.draining
	s.coord.me.written = s.now()
	s.mu.Unlock()
	item := map[string]types.AttributeValue{AttrShardID: str(WorkerRowPrefix + s.cfg.WorkerID), AttrOwner: str(s.cfg.WorkerID),
		AttrCounter: num(n), AttrLeaseTimeout: s.leaseTimeout()}
	if draining {
		item[AttrWorkerState] = str(stateDraining)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	if _, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(s.cfg.Table), Item: item}); err != nil {
		s.log.Debug("cannot write the presence row", zap.Bool("draining", draining), zap.Error(err))
		return
	}
	s.setPresent(true)
}

// setPresent records whether this worker's presence row exists.
func (s *Store) setPresent(exists bool) {
	s.mu.Lock()
	s.coord.me.exists = exists
	s.mu.Unlock()
}

// Retire deletes this worker's presence row: call it when the worker has stopped (its leases
// released). Missing the delete is harmless: the row expires and the leader removes it.
func (s *Store) Retire(ctx context.Context) {
	s.coord.me.mu.Lock()
	defer s.coord.me.mu.Unlock()
	s.retire(ctx)
}

// retire is Retire with s.coord.me.mu held.
func (s *Store) retire(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(s.cfg.Table),
		Key: key(WorkerRowPrefix + s.cfg.WorkerID)})
	if err != nil {
		s.log.Debug("cannot delete the presence row", zap.Error(err))
		return
	}
	s.setPresent(false)
}

// markDraining writes the presence row with the draining mark: from the leader's next plan on,
// this worker is given nothing and what it still holds is claimed for others.
func (s *Store) markDraining(ctx context.Context) {
	s.coord.me.mu.Lock()
	defer s.coord.me.mu.Unlock()
	s.mu.Lock()
	s.coord.me.draining = true
	s.mu.Unlock()
	s.announce(ctx)
}

// fleetLocked is the leader's view of the workers, from its Scan and observations (s.mu
// held): the live ones (a lease or presence row moved within FailoverTime, not draining), and
// the expired presence rows of workers that hold no lease (to delete).
func (s *Store) fleetLocked() (live map[string]bool, stale []Lease) {
	live = map[string]bool{}
	draining := map[string]bool{}
	if !s.coord.me.draining {
		live[s.cfg.WorkerID] = true
	}
	var expired []Lease
	for id, l := range s.view.rows {
		w, ok := presenceWorker(id)
		if !ok || w == s.cfg.WorkerID {
			continue
		}
		if l.State == stateDraining {
			draining[w] = true
		}
		switch {
		case s.expiredLocked(l):
			expired = append(expired, l)
		case !draining[w]:
			live[w] = true
		}
	}
	holders := map[string]bool{}
	for id := range s.topo {
		// A row the leader transferred (owner and claim the same worker) shows the leader's
		// write, not the owner's: counted, a dead worker would stay live on the transfers it
		// never takes, and be given the same leases again each time they expire.
		if l, ok := s.view.rows[id]; ok && l.Owner != "" && l.ClaimRequest != l.Owner && !l.Closed() && !s.expiredLocked(l) {
			holders[l.Owner] = true
			if !draining[l.Owner] && l.Owner != s.cfg.WorkerID {
				live[l.Owner] = true
			}
		}
	}
	for _, l := range expired {
		if w, _ := presenceWorker(l.ShardID); !holders[w] && !live[w] {
			stale = append(stale, l)
		}
	}
	return live, stale
}

// removePresence deletes an expired presence row, conditional on the counter the leader saw.
func (s *Store) removePresence(ctx context.Context, l Lease) {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(s.cfg.Table), Key: key(l.ShardID),
		ConditionExpression:       aws.String("#counter = :n"),
		ExpressionAttributeNames:  map[string]string{"#counter": AttrCounter},
		ExpressionAttributeValues: map[string]types.AttributeValue{":n": num(l.Counter)}})
	if err != nil {
		s.log.Debug("cannot remove a stale presence row", zap.String("row", l.ShardID), zap.Error(err))
		return
	}
	s.log.Info("removed the presence row of a worker gone", zap.String("worker", strings.TrimPrefix(l.ShardID, WorkerRowPrefix)))
}
