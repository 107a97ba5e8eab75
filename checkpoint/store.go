// Package checkpoint is recstream's DynamoDB lease and checkpoint store. *Store implements the
// vmware-go-kcl-v2 v1.0.0 checkpoint.Checkpointer interface (plug it in with
// worker.NewWorker(...).WithCheckpointer(store)) and fixes the library's own DynamoCheckpoint:
//
//   - Fencing: every write of a lease holder (renewal, checkpoint, release) is a conditional
//     write on AssignedTo = this worker AND LeaseCounter = the value this worker last wrote, and
//     increments LeaseCounter; every take-over is conditional on the owner and counter it saw.
//     A worker that lost its lease gets an error wrapping ErrLeaseLost and cannot overwrite the
//     new owner's lease or checkpoint.
//   - Expiry as in the Java KCL: a lease held by another worker is expired when its counter has
//     not been seen to change for FailoverTime, measured on this process's monotonic clock from
//     the moment this store first saw the current counter. Other machines' clocks are never
//     compared. HeldUntil gives the holder's own, conservative view of the same deadline.
//   - Paginated, consistent Scans; the table is created on demand (PAY_PER_REQUEST) and waited
//     for with the SDK's table-exists waiter.
//
// Lease stealing (the library's EnableLeaseStealing) is a polite hand-over: ClaimShard writes
// ClaimRequest; the holder's next renewal sees it, stops renewing and fails its consumer, whose
// exit releases the lease; the claimant then takes the free lease. No one takes an unexpired
// lease, so HeldUntil stays a safe bound for the holder's writes.
//
// The table layout and the protocol are documented in the README (section "Lease table").
package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
	"go.uber.org/zap"
)

// Store implements chk.Checkpointer.
var _ chk.Checkpointer = (*Store)(nil)

// Config configures a Store. Values come from the `dynamodb` and `worker` config sections.
type Config struct {
	// Table is the lease table name (dynamodb.lease_table).
	Table string
	// WorkerID is this process's lease owner name; it must equal the KCL configuration's
	// WorkerID (worker.worker_id, resolved).
	WorkerID string
	// FailoverTime: a lease whose counter has not moved for this long may be taken over
	// (worker.failover_time). Must equal the KCL configuration's FailoverTimeMillis.
	FailoverTime time.Duration
	// CallTimeout bounds each DynamoDB call made through the library's context-less interface
	// (a Scan gets twice as long). Zero means min(5s, FailoverTime/2).
	CallTimeout time.Duration
	// CreateTimeout bounds Init's wait for the table to become ACTIVE. Zero means 2 minutes.
	CreateTimeout time.Duration
	// ScanPageSize is the Limit of each Scan page; zero leaves DynamoDB's 1 MB pages.
	ScanPageSize int32
	// Logger receives lease lifecycle events; nil discards them.
	Logger *zap.Logger
	// Metrics receives the lease series (hand-overs, claims); nil keeps unregistered ones.
	Metrics *Metrics
	// Now is the clock; nil means time.Now. It must carry monotonic readings in production;
	// tests inject a fake to expire leases without waiting.
	Now func() time.Time
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Table == "" {
		return errors.New("table: must not be empty")
	}
	if len(c.Table) < 3 || len(c.Table) > 255 {
		return fmt.Errorf("table: must be 3 to 255 characters, got %q", c.Table)
	}
	if c.WorkerID == "" {
		return errors.New("worker_id: must not be empty")
	}
	if c.FailoverTime < time.Second {
		return fmt.Errorf("failover_time: must be >= 1s, got %s", c.FailoverTime)
	}
	if c.CallTimeout < 0 || c.CallTimeout >= c.FailoverTime {
		return fmt.Errorf("call_timeout: must be >= 0 and < failover_time (%s), got %s", c.FailoverTime, c.CallTimeout)
	}
	if c.CreateTimeout < 0 {
		return fmt.Errorf("create_timeout: must be >= 0, got %s", c.CreateTimeout)
	}
	if c.ScanPageSize < 0 {
		return fmt.Errorf("scan_page_size: must be >= 0, got %d", c.ScanPageSize)
	}
	return nil
}

// Store is the lease and checkpoint store of one worker process. It is safe for concurrent
// use by the library's event loop, its per-shard consumers and lease renewers, and the record
// processors. Its writes to one shard's row are serialised, so a renewal never races this
// store's own checkpoint.
type Store struct {
	cfg Config
	db  *dynamodb.Client
	log *zap.Logger
	now func() time.Time

	metrics *Metrics

	mu      sync.Mutex
	shardMu map[string]*sync.Mutex
	held    map[string]heldLease   // leases this store holds
	seen    map[string]observation // last state seen of every row, for expiry

	// Lease policy for a KCL worker (leasing.go), guarded by mu; viewMu serialises Scans.
	leasing   Leasing
	topo      map[string][]string // shard id -> parents, as Kinesis lists the stream; nil: unknown
	view      leaseView
	lastClaim time.Time
	viewMu    sync.Mutex
}

// heldLease is what the holder knows of its lease.
type heldLease struct {
	counter   int64     // the counter this store last wrote
	renewedAt time.Time // monotonic time taken before sending that write
	claimedBy string    // claimant seen at the last renewal attempt
	uncertain bool      // the last write failed ambiguously: it may have committed
}

// observation is the state of a row and when this store first saw it (monotonic).
type observation struct {
	owner      string
	counter    int64
	claim      string
	checkpoint string // the row's checkpoint as last read or written by this store
	seenAt     time.Time
}

// New validates cfg and returns a Store using db. It does no I/O; call Init (the library's
// worker does) or EnsureTable before use.
func New(cfg Config, db *dynamodb.Client) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("checkpoint config: %w", err)
	}
	if db == nil {
		return nil, errors.New("checkpoint: nil DynamoDB client")
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = min(5*time.Second, cfg.FailoverTime/2)
	}
	if cfg.CreateTimeout == 0 {
		cfg.CreateTimeout = 2 * time.Minute
	}
	s := &Store{
		cfg:     cfg,
		db:      db,
		log:     cfg.Logger,
		now:     cfg.Now,
		shardMu: map[string]*sync.Mutex{},
		held:    map[string]heldLease{},
		seen:    map[string]observation{},
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.log = s.log.With(zap.String("component", "checkpoint"))
	if s.now == nil {
		s.now = time.Now
	}
	s.metrics = cfg.Metrics
	if s.metrics == nil {
		s.metrics, _ = NewMetrics(nil)
	}
	return s, nil
}

// WorkerID returns the owner name this store writes.
func (s *Store) WorkerID() string { return s.cfg.WorkerID }

// HeldUntil returns the monotonic deadline until which this worker is certain it holds the
// lease on shardID: the time taken just before its last successful renewal, checkpoint or
// acquisition was sent, plus FailoverTime. No other worker can take the lease before then
// (they wait FailoverTime after seeing that write), unless this worker releases it. ok is
// false when the lease is not held. Compare the deadline with time.Now() (or the injected
// clock) in this process only; never serialise it. Callers keep their own safety margin.
func (s *Store) HeldUntil(shardID string) (deadline time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.held[shardID]
	if !ok {
		return time.Time{}, false
	}
	return h.renewedAt.Add(s.cfg.FailoverTime), true
}

// Init creates the table if needed and waits for it to be ACTIVE (bounded by CreateTimeout).
// The library's worker calls it from Start.
func (s *Store) Init() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CreateTimeout)
	defer cancel()
	return s.EnsureTable(ctx)
}

// EnsureTable creates the lease table with on-demand billing unless it exists, then waits with
// the SDK's table-exists waiter until it is ACTIVE. Concurrent callers are fine.
func (s *Store) EnsureTable(ctx context.Context) error {
	_, err := s.db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.cfg.Table)})
	var nf *types.ResourceNotFoundException
	switch {
	case errors.As(err, &nf):
		_, err = s.db.CreateTable(ctx, &dynamodb.CreateTableInput{
			TableName:            aws.String(s.cfg.Table),
			AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(AttrShardID), AttributeType: types.ScalarAttributeTypeS}},
			KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(AttrShardID), KeyType: types.KeyTypeHash}},
			BillingMode:          types.BillingModePayPerRequest,
		})
		var inUse *types.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return fmt.Errorf("create lease table %s: %w", s.cfg.Table, err)
		}
		if err == nil {
			s.log.Info("created lease table", zap.String("table", s.cfg.Table))
		}
	case err != nil:
		return fmt.Errorf("describe lease table %s: %w", s.cfg.Table, err)
	}
	maxWait := time.Until(deadlineOr(ctx, time.Now().Add(s.cfg.CreateTimeout)))
	w := dynamodb.NewTableExistsWaiter(s.db, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay = 100 * time.Millisecond
		o.MaxDelay = 2 * time.Second
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.cfg.Table)}, maxWait); err != nil {
		return fmt.Errorf("wait for lease table %s to be active: %w", s.cfg.Table, err)
	}
	return nil
}

func deadlineOr(ctx context.Context, def time.Time) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return def
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
	unlock := s.lockShard(shard.ID)
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
	defer cancel()
	if h, ok := s.heldLease(shard.ID); ok {
		return s.renew(ctx, shard, h)
	}
	return s.acquire(ctx, shard)
}

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
		return s.lost("renew", shard.ID, cur.Owner)
	}
	if cur.ClaimRequest != "" && cur.ClaimRequest != s.cfg.WorkerID {
		// Hand over: stop renewing; the consumer fails and releases the lease once stopped.
		s.mu.Lock()
		if hl, ok := s.held[shard.ID]; ok && hl.claimedBy == "" {
			hl.claimedBy = cur.ClaimRequest
			s.held[shard.ID] = hl
			s.log.Info("lease claimed", zap.String("shard_id", shard.ID), zap.String("claimant", cur.ClaimRequest))
		}
		s.mu.Unlock()
		return &LeaseError{Op: "renew", ShardID: shard.ID, Owner: cur.ClaimRequest, Err: ErrLeaseClaimed}
	}
	err = s.fencedUpdate(ctx, "renew", shard.ID, h, "SET #counter = :next, #lt = :lt", nil, nil)
	if err != nil {
		return err
	}
	s.setShardHeld(shard)
	return nil
}

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
	var err error
	previous := "new"
	switch {
	case ok && cur.Owner == "" && cur.ClaimRequest == me:
		previous = "claim"
	case ok && cur.Owner == "" && cur.Counter > 0:
		previous = "released"
	case ok && cur.Owner != "":
		previous = "expired"
	}
	next := cur.Counter + 1
	t0 := s.now()
	lt := &types.AttributeValueMemberS{Value: time.Now().Add(s.cfg.FailoverTime).UTC().Format(time.RFC3339Nano)}

	if !ok {
		item := map[string]types.AttributeValue{
			AttrShardID:      &types.AttributeValueMemberS{Value: shard.ID},
			AttrOwner:        &types.AttributeValueMemberS{Value: me},
			AttrCounter:      num(next),
			AttrLeaseTimeout: lt,
		}
		if shard.ParentShardId != "" {
			item[AttrParent] = &types.AttributeValueMemberS{Value: shard.ParentShardId}
		}
		_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{
			TableName:                aws.String(s.cfg.Table),
			Item:                     item,
			ConditionExpression:      aws.String("attribute_not_exists(#id)"),
			ExpressionAttributeNames: map[string]string{"#id": AttrShardID},
		})
	} else {
		names := map[string]string{"#owner": AttrOwner, "#counter": AttrCounter, "#lt": AttrLeaseTimeout, "#claim": AttrClaim}
		values := map[string]types.AttributeValue{":me": &types.AttributeValueMemberS{Value: me}, ":next": num(next), ":lt": lt}
		var cond string
		switch {
		case cur.Owner == "" && (cur.ClaimRequest == "" || cur.ClaimRequest == me || expired):
			cond = "attribute_not_exists(#owner)"
		case cur.Owner == "":
			return &LeaseError{Op: "acquire", ShardID: shard.ID, Owner: cur.ClaimRequest, Err: ErrLeaseClaimed}
		case expired:
			cond = "#owner = :old"
			values[":old"] = &types.AttributeValueMemberS{Value: cur.Owner}
		default:
			return &LeaseError{Op: "acquire", ShardID: shard.ID, Owner: cur.Owner, Err: ErrLeaseHeld}
		}
		if cur.Counter == 0 {
			cond += " AND attribute_not_exists(#counter)"
		} else {
			cond += " AND #counter = :n"
			values[":n"] = num(cur.Counter)
		}
		update := "SET #owner = :me, #counter = :next, #lt = :lt"
		if shard.ParentShardId != "" && cur.ParentShardID == "" {
			update += ", #parent = :parent"
			names["#parent"] = AttrParent
			values[":parent"] = &types.AttributeValueMemberS{Value: shard.ParentShardId}
		}
		update += " REMOVE #claim"
		_, err = s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                 aws.String(s.cfg.Table),
			Key:                       key(shard.ID),
			UpdateExpression:          aws.String(update),
			ConditionExpression:       aws.String(cond),
			ExpressionAttributeNames:  names,
			ExpressionAttributeValues: values,
		})
	}
	if err != nil {
		var ccf *types.ConditionalCheckFailedException
		if !errors.As(err, &ccf) {
			return fmt.Errorf("acquire lease %s: %w", shard.ID, err)
		}
		// Either another worker won the race, or an SDK retry of our own committed write.
		after, ok2, rerr := s.getLease(ctx, shard.ID)
		if rerr != nil || !ok2 || after.Owner != me || after.Counter != next {
			if rerr == nil {
				s.observe(shard.ID, after, ok2)
				if ok2 {
					s.noteRow(after)
				}
			}
			return &LeaseError{Op: "acquire", ShardID: shard.ID, Owner: after.Owner, Err: ErrLeaseHeld}
		}
	}
	s.mu.Lock()
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

// CheckpointSequence writes shard's checkpoint (shard.GetCheckpoint(); SHARD_END after the
// processor's Checkpoint(nil)) fenced on this store's lease. The record processor's
// Checkpoint calls it. A lease not held (or taken over meanwhile) gives a *LeaseError
// wrapping ErrLeaseLost and writes nothing. A successful checkpoint also renews the lease.
func (s *Store) CheckpointSequence(shard *par.ShardStatus) error {
	cp := shard.GetCheckpoint()
	if cp == "" {
		return fmt.Errorf("checkpoint %s: empty sequence number", shard.ID)
	}
	unlock := s.lockShard(shard.ID)
	defer unlock()
	h, ok := s.heldLease(shard.ID)
	if !ok {
		s.restoreCheckpoint(shard)
		return s.lost("checkpoint", shard.ID, "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
	defer cancel()
	update := "SET #cp = :cp, #cpt = :cpt, #counter = :next, #lt = :lt"
	names := map[string]string{"#cp": AttrCheckpoint, "#cpt": AttrCheckpointTime}
	values := map[string]types.AttributeValue{":cp": &types.AttributeValueMemberS{Value: cp},
		":cpt": &types.AttributeValueMemberS{Value: time.Now().UTC().Format(time.RFC3339Nano)}}
	if shard.ParentShardId != "" {
		update += ", #parent = :parent"
		names["#parent"] = AttrParent
		values[":parent"] = &types.AttributeValueMemberS{Value: shard.ParentShardId}
	}
	if err := s.fencedUpdate(ctx, "checkpoint", shard.ID, h, update, names, values, func(l Lease) bool { return l.Checkpoint == cp }); err != nil {
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
	unlock := s.lockShard(shardID)
	defer unlock()
	h, ok := s.heldLease(shardID)
	if !ok {
		return s.lost("release", shardID, "")
	}
	// Drop first: from here on a take-over is legitimate.
	s.dropHeld(shardID)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
	defer cancel()
	err := s.fencedUpdate(ctx, "release", shardID, h, "SET #counter = :next REMOVE #owner, #lt", nil, nil, func(l Lease) bool { return l.Owner == "" })
	if err != nil {
		return err
	}
	s.noteReleased(shardID, h.counter+1)
	s.log.Info("lease released", zap.String("shard_id", shardID), zap.Int64("lease_counter", h.counter+1))
	return nil
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

// Renew renews this store's lease on shard, like GetLease on a held lease, but never
// acquires: a lease not held (released, abandoned or lost meanwhile) gives a *LeaseError
// wrapping ErrLeaseLost and writes nothing. Retrying a failed renewal with it cannot take a
// lease back that this worker has let go of.
func (s *Store) Renew(shard *par.ShardStatus) error {
	unlock := s.lockShard(shard.ID)
	defer unlock()
	h, ok := s.heldLease(shard.ID)
	if !ok {
		return &LeaseError{Op: "renew", ShardID: shard.ID, Err: ErrLeaseLost}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
	defer cancel()
	return s.renew(ctx, shard, h)
}

// RemoveLeaseInfo deletes shardID's row. The library calls it for shards Kinesis no longer
// lists. Only a free or finished (SHARD_END) row is deleted: a conditional failure is an
// error, so a glitch in shard listing cannot erase a live lease and its checkpoint.
func (s *Store) RemoveLeaseInfo(shardID string) error {
	unlock := s.lockShard(shardID)
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
	defer cancel()
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(s.cfg.Table),
		Key:                       key(shardID),
		ConditionExpression:       aws.String("attribute_not_exists(#owner) OR #cp = :end"),
		ExpressionAttributeNames:  map[string]string{"#owner": AttrOwner, "#cp": AttrCheckpoint},
		ExpressionAttributeValues: map[string]types.AttributeValue{":end": &types.AttributeValueMemberS{Value: ShardEnd}},
	})
	if err != nil {
		return fmt.Errorf("remove lease %s: %w", shardID, err)
	}
	s.dropHeld(shardID)
	s.mu.Lock()
	delete(s.seen, shardID)
	s.mu.Unlock()
	return nil
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
	unlock := s.lockShard(shard.ID)
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
	defer cancel()
	cur, ok, err := s.getLease(ctx, shard.ID)
	if err != nil {
		return fmt.Errorf("claim lease %s: %w", shard.ID, err)
	}
	if !ok || cur.Owner == "" || cur.Owner == claimID || cur.Closed() || cur.ClaimRequest != "" || cur.Counter == 0 {
		return &LeaseError{Op: "claim", ShardID: shard.ID, Owner: cur.Owner, Err: ErrLeaseHeld}
	}
	_, err = s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.cfg.Table),
		Key:                      key(shard.ID),
		UpdateExpression:         aws.String("SET #claim = :me"),
		ConditionExpression:      aws.String("#owner = :owner AND #counter = :n AND attribute_not_exists(#claim)"),
		ExpressionAttributeNames: map[string]string{"#claim": AttrClaim, "#owner": AttrOwner, "#counter": AttrCounter},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":me": &types.AttributeValueMemberS{Value: claimID}, ":owner": &types.AttributeValueMemberS{Value: cur.Owner}, ":n": num(cur.Counter),
		},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return &LeaseError{Op: "claim", ShardID: shard.ID, Owner: cur.Owner, Err: ErrLeaseHeld}
	}
	if err != nil {
		return fmt.Errorf("claim lease %s: %w", shard.ID, err)
	}
	cur.ClaimRequest = claimID
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
}

// ListLeases returns every row of the table, sorted by shard id, reading all Scan pages with
// consistent reads. The `status` command and ListActiveWorkers use it.
func (s *Store) ListLeases(ctx context.Context) ([]Lease, error) {
	in := &dynamodb.ScanInput{TableName: aws.String(s.cfg.Table), ConsistentRead: aws.Bool(true)}
	if s.cfg.ScanPageSize > 0 {
		in.Limit = aws.Int32(s.cfg.ScanPageSize)
	}
	var out []Lease
	p := dynamodb.NewScanPaginator(s.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("scan lease table %s: %w", s.cfg.Table, err)
		}
		for _, item := range page.Items {
			l, err := parseLease(item)
			if err != nil {
				return nil, fmt.Errorf("scan lease table %s: %w", s.cfg.Table, err)
			}
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ShardID < out[j].ShardID })
	return out, nil
}

// fencedUpdate applies update to a lease this store holds with counter h.counter, conditional
// on owner and counter, and sets the counter to h.counter+1 (":next"). "#owner", "#counter"
// and "#lt" (with ":lt", a fresh informational timeout) are always defined. On success the
// held lease is renewed (unless op is release).
//
// A conditional failure is re-read. If the row shows exactly this write and no earlier write
// is in doubt, it was an SDK retry of a committed request: success. If the row shows an
// earlier write of ours whose outcome was in doubt (it failed ambiguously), its counter is
// adopted, keeping the older renewal time, and the write is retried once. Anything else is a
// lost lease.
func (s *Store) fencedUpdate(ctx context.Context, op, shardID string, h heldLease, update string,
	names map[string]string, values map[string]types.AttributeValue, verify ...func(Lease) bool) error {
	me := s.cfg.WorkerID
	n := map[string]string{"#owner": AttrOwner, "#counter": AttrCounter, "#lt": AttrLeaseTimeout}
	for k, v := range names {
		n[k] = v
	}
	for attempt := 0; ; attempt++ {
		next := h.counter + 1
		v := map[string]types.AttributeValue{
			":me": &types.AttributeValueMemberS{Value: me}, ":n": num(h.counter), ":next": num(next),
		}
		if op != "release" {
			v[":lt"] = &types.AttributeValueMemberS{Value: time.Now().Add(s.cfg.FailoverTime).UTC().Format(time.RFC3339Nano)}
		}
		for k, x := range values {
			v[k] = x
		}
		t0 := s.now() // before sending: the write commits after this, so t0+failover is conservative
		_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                 aws.String(s.cfg.Table),
			Key:                       key(shardID),
			UpdateExpression:          aws.String(update),
			ConditionExpression:       aws.String("#owner = :me AND #counter = :n"),
			ExpressionAttributeNames:  n,
			ExpressionAttributeValues: v,
		})
		if err != nil {
			var ccf *types.ConditionalCheckFailedException
			if !errors.As(err, &ccf) {
				s.updateHeld(shardID, h.counter, func(hl *heldLease) { hl.uncertain = true })
				return fmt.Errorf("%s lease %s: %w", op, shardID, err)
			}
			cur, ok, rerr := s.getLease(ctx, shardID)
			if rerr != nil {
				return fmt.Errorf("%s lease %s: re-read after conditional failure: %w", op, shardID, rerr)
			}
			ownWrite := ok && cur.Counter == next && (cur.Owner == me || op == "release")
			matches := ownWrite
			for _, f := range verify {
				matches = matches && f(cur)
			}
			switch {
			case matches && !h.uncertain:
				// An SDK retry of this very write, which had committed.
			case ownWrite && cur.Owner == me && h.uncertain && attempt == 0:
				s.updateHeld(shardID, h.counter, func(hl *heldLease) { hl.counter, hl.uncertain = next, false })
				h.counter, h.uncertain = next, false
				continue
			default:
				s.observe(shardID, cur, ok)
				return s.lost(op, shardID, cur.Owner)
			}
		}
		if op == "release" {
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

// updateHeld applies f to the held lease on shardID if its counter is still counter.
func (s *Store) updateHeld(shardID string, counter int64, f func(*heldLease)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if hl, ok := s.held[shardID]; ok && hl.counter == counter {
		f(&hl)
		s.held[shardID] = hl
	}
}

// lost forgets a held lease and returns the ErrLeaseLost error for op.
func (s *Store) lost(op, shardID, owner string) error {
	if s.dropHeld(shardID) {
		s.log.Warn("lease lost", zap.String("shard_id", shardID), zap.String("op", op), zap.String("owner", owner))
	}
	return &LeaseError{Op: op, ShardID: shardID, Owner: owner, Err: ErrLeaseLost}
}

func (s *Store) dropHeld(shardID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.held[shardID]
	delete(s.held, shardID)
	return ok
}

func (s *Store) heldLease(shardID string) (heldLease, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.held[shardID]
	return h, ok
}

// lockShard serialises this store's operations on one row.
func (s *Store) lockShard(shardID string) func() {
	s.mu.Lock()
	m, ok := s.shardMu[shardID]
	if !ok {
		m = &sync.Mutex{}
		s.shardMu[shardID] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// observe records the row's state; the time is kept while owner, counter and claim stay the
// same, so expiry is "unchanged for FailoverTime since first seen", on this process's clock.
func (s *Store) observe(shardID string, l Lease, exists bool) observation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.observeLocked(shardID, l, exists)
}

func (s *Store) observeLocked(shardID string, l Lease, exists bool) observation {
	now := s.now()
	if !exists {
		delete(s.seen, shardID)
		return observation{seenAt: now}
	}
	o, ok := s.seen[shardID]
	if !ok || o.owner != l.Owner || o.counter != l.Counter || o.claim != l.ClaimRequest {
		o = observation{owner: l.Owner, counter: l.Counter, claim: l.ClaimRequest, seenAt: now}
	}
	o.checkpoint = l.Checkpoint
	s.seen[shardID] = o
	return o
}

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

func (s *Store) getLease(ctx context.Context, shardID string) (Lease, bool, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.cfg.Table),
		Key:            key(shardID),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return Lease{}, false, fmt.Errorf("get lease row: %w", err)
	}
	if len(out.Item) == 0 {
		return Lease{}, false, nil
	}
	l, err := parseLease(out.Item)
	if err != nil {
		return Lease{}, false, fmt.Errorf("lease table %s: %w", s.cfg.Table, err)
	}
	return l, true, nil
}

func key(shardID string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrShardID: &types.AttributeValueMemberS{Value: shardID}}
}

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}
