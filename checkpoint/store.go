package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"go.uber.org/zap"
)

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
	// ClaimIndex makes EnsureTable create the claim index (IndexClaims) with the table, or add
	// it to a table made without it: only leader-assigned leasing (worker.leader_assigned)
	// reads it, so a fleet that does not use it pays for no index and needs no UpdateTable.
	ClaimIndex bool
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
	share     shareMemo
	coord     coordination
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

// onRow is the preamble of every call on one row: it serialises this store's calls on shardID
// (so a renewal never races this store's own checkpoint), bounds the call by CallTimeout and
// hands f the lease this store holds on the row (held false: none).
func (s *Store) onRow(shardID string, f func(ctx context.Context, h heldLease, held bool) error) error {
	unlock := s.lockShard(shardID)
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
	defer cancel()
	h, held := s.heldLease(shardID)
	return f(ctx, h, held)
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

// heldLease returns the lease this store holds on shardID, if any.
func (s *Store) heldLease(shardID string) (heldLease, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.held[shardID]
	return h, ok
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

// dropHeld forgets the lease on shardID and reports whether it was held.
func (s *Store) dropHeld(shardID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.held[shardID]
	delete(s.held, shardID)
	delete(s.coord.claimSeen, shardID)
	return ok
}

// observe records the row's state; the time is kept while owner, counter and claim stay the
// same, so expiry is "unchanged for FailoverTime since first seen", on this process's clock.
func (s *Store) observe(shardID string, l Lease, exists bool) observation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.observeLocked(shardID, l, exists)
}

// observeLocked is observe with s.mu held.
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
