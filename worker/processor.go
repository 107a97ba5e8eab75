package worker

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/objstore"
)

// Deps are the processor's collaborators; cmd builds them.
type Deps struct {
	// Store receives output objects and errors/ objects (the recommendations bucket).
	Store objstore.Store
	// Recommender enriches events.
	Recommender Recommender
	// K is the number of recommended and similar items per event.
	K int
	// IsLeaseLost reports whether a checkpoint error means another worker holds the lease
	// (a fenced write). nil: no error is classified so; HeldUntil is still consulted.
	IsLeaseLost func(error) bool
	// Metrics receives the worker's series; nil: unregistered series.
	Metrics *Metrics
	// Log is the root logger; the processor adds component and shard_id.
	Log *zap.Logger
	// Now is the clock for buffer ages; nil means time.Now.
	Now func() time.Time
	// Table, when set (worker.output.table: iceberg), receives the output records as data
	// files committed to an Iceberg table instead of Hive-partitioned objects in Store;
	// errors/ objects still go to Store.
	Table Table
}

// shared is the state every shard processor of one worker process shares.
type shared struct {
	cfg      Config
	stream   string
	deps     Deps
	lease    Lease
	guard    *leaseGuard // nil when processors are driven directly (tests)
	ctx      context.Context
	stopping *atomic.Bool

	beforeCheckpoint func(flushes int) // tests: see Worker.beforeCheckpoint
	chunkRecords     int               // tests: user records per chunk of a page (see take); 0: flush.max_records

	budget *memBudget // worker.buffer_budget_bytes; nil: unbounded (processors driven directly, replay)

	unknown    fieldNames                     // unknown field names with a series of their own
	storageErr atomic.Pointer[storageProblem] // last permanent storage error, nil once a put succeeds

	mu   sync.Mutex
	live map[string]*processor
	// retired: shards whose processor ended, and when; their counters and histograms are
	// deleted shardSeriesRetention later (see retireLocked).
	retired map[string]time.Time
}

func (s *shared) now() time.Time {
	if s.deps.Now != nil {
		return s.deps.Now()
	}
	return time.Now()
}

// CreateProcessor implements kcl.IRecordProcessorFactory: one processor per shard assignment.
func (s *shared) CreateProcessor() kcl.IRecordProcessor { return &processor{s: s} }

type procState int

const (
	stateActive  procState = iota
	stateStopped           // shutdown requested: take no more records, the buffer may still be flushed
	stateDead              // lease lost or flush abandoned: never write or checkpoint again
)

// processor is the record processor of one shard assignment. The library calls Initialize,
// then ProcessRecords repeatedly, then (maybe) Shutdown, all on the shard's consumer goroutine.
type processor struct {
	s          *shared
	shard      string
	log        *zap.Logger
	buf        *buffer
	state      procState
	checkpoint string // last sequence number checkpointed by this processor or found at start
	lastStatus time.Time
	taken      int64
	batch      []userRecord // the batch being taken (for logs)
	// writeAbandoned: a fenced write (upload or checkpoint) was cancelled and may still
	// complete on the server, so the lease must expire rather than be released (see die).
	writeAbandoned bool
	health         shardHealth
	share          *budgetShare // this shard's part of the buffer budget (budget.go)
	// table: this processor's view of the shard's position in the Iceberg table (see table.go).
	table tableView
	// pending are the flushes whose Iceberg commits were asked for and have not been seen to
	// land yet, oldest first (table.go).
	pending []*pendingCommit
	// atTip: the flush under way closes the buffer's window at the stream's tip (or ends a
	// closed shard): nothing more is coming soon, so its commit is urgent (icetable.Request).
	atTip bool

	// Published copies of checkpoint and buf.n for the shutdown-timeout report, which runs on
	// Run's goroutine while this shard's consumer goroutine may still be inside a flush.
	pubCheckpoint atomic.Pointer[string]
	pubBuffered   atomic.Int64
}

// setCheckpoint records (and publishes) the shard's checkpoint.
func (p *processor) setCheckpoint(seq string) {
	p.checkpoint = seq
	p.pubCheckpoint.Store(&seq)
}

// publishBuffered publishes the buffer's record count; call after every buffer change.
func (p *processor) publishBuffered() { p.pubBuffered.Store(int64(p.buf.n)) }

// shardReport is what the shutdown-timeout log says about one shard still being processed.
type shardReport struct {
	shard      string
	checkpoint string
	buffered   int64
}

// snapshot returns the published state of every live processor, sorted by shard id. Safe to
// call from any goroutine.
func (s *shared) snapshot() []shardReport {
	s.mu.Lock()
	out := make([]shardReport, 0, len(s.live))
	for id, p := range s.live {
		r := shardReport{shard: id, buffered: p.pubBuffered.Load()}
		if c := p.pubCheckpoint.Load(); c != nil {
			r.checkpoint = *c
		}
		out = append(out, r)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].shard < out[j].shard })
	return out
}

// Initialize implements kcl.IRecordProcessor.
func (p *processor) Initialize(in *kcl.InitializationInput) {
	p.shard = in.ShardId
	p.log = p.s.deps.Log.With(zap.String("component", "worker"), zap.String("stream", p.s.stream), zap.String("shard_id", p.shard))
	p.buf = newBuffer(p.s.cfg.Flush)
	p.share = p.s.budget.join(in.ShardId)
	cp := ""
	if in.ExtendedSequenceNumber != nil {
		cp = aws.ToString(in.ExtendedSequenceNumber.SequenceNumber)
	}
	p.setCheckpoint(cp)
	p.lastStatus = p.s.now()
	p.health.started(p.lastStatus)
	p.s.mu.Lock()
	p.s.live[p.shard] = p
	delete(p.s.retired, p.shard) // back before its series were deleted: they go on
	p.s.mu.Unlock()
	p.s.deps.Metrics.LeasesHeld.Inc()
	// Export leases_lost_total from 0 while the shard is held, so increase() sees its first loss.
	p.s.deps.Metrics.LeasesLost.WithLabelValues(p.shard)
	p.log.Info("shard processor started", zap.String("checkpoint", p.checkpoint))
	p.reserveFirstPage()
}

// ProcessRecords implements kcl.IRecordProcessor. It expands KPL aggregates, enriches the
// batch and buffers it, flushing (upload, then checkpoint) at every boundary the data decides
// (see buffer). An empty read at the stream's tip after the buffer's window has ended (plus
// flush.window_grace) proves the window complete and flushes it. On any failure it cannot
// retry past, it drops the buffer and stops writing: the records are replayed from the
// checkpoint.
func (p *processor) ProcessRecords(in *kcl.ProcessRecordsInput) {
	if p.state != stateActive {
		return
	}
	if p.s.stopping.Load() {
		// Stop taking records: everything after the checkpoint is replayed by the next owner.
		p.state = stateStopped
		return
	}
	if !p.settle(settleLook) {
		return
	}
	m := p.s.deps.Metrics
	m.MillisBehind.WithLabelValues(p.shard).Set(float64(in.MillisBehindLatest))
	p.health.enter(p.s.now(), in.MillisBehindLatest)
	defer p.health.leave()
	// The page is charged to the buffer budget, and the library fetches the next one only
	// when there is room for it (budget.go).
	if !p.startBudget(in.Records) {
		return
	}
	defer p.settleBudget(in.Records)
	if len(in.Records) > 0 {
		p.health.holding(p.s.now())
		if !p.take(in) {
			// A processor that did not take its whole page must never end the shard (Shutdown
			// TERMINATE writes SHARD_END only while active): whatever path made take give up
			// without killing the processor, it is stopped now and the page is replayed.
			if p.state == stateActive {
				p.state = stateStopped
				p.log.Warn("page not taken, processor stopped, records left for replay", zap.String("checkpoint", p.checkpoint),
					zap.String("seq_first", aws.ToString(in.Records[0].SequenceNumber)), zap.Int("records", len(in.Records)))
			}
			return
		}
	} else if in.MillisBehindLatest == 0 && !p.buf.empty() && p.s.now().After(p.buf.windowEnd().Add(p.s.cfg.Flush.WindowGrace)) {
		// Caught up, nothing more to read, and the window is over: any record still to come
		// arrives in a later window (one that does not is counted as late).
		p.buf.closeAtTip()
		p.atTip = true
		p.flush(in.Checkpointer)
		p.atTip = false
	}
	if len(in.Records) == 0 && in.MillisBehindLatest == 0 && len(p.pending) > 0 {
		// Caught up with commits in flight: hurry those that wait for the tick, and wait up to
		// one idle pause for them, so the checkpoint follows the landing at once instead of at
		// the next read. Nothing is lost by the wait: the records it delays are in a window
		// that closes later anyway; the next read comes at most one pause later.
		p.hurryAtTip()
		if !p.settle(p.s.cfg.IdleTimeBetweenReads) {
			return
		}
	}
	if iv := p.s.cfg.StatusInterval; iv > 0 && p.s.now().Sub(p.lastStatus) >= iv {
		p.lastStatus = p.s.now()
		p.log.Info("shard status", zap.Int64("records", p.taken), zap.Int64("millis_behind", in.MillisBehindLatest),
			zap.Int("buffered", p.buf.n), zap.String("checkpoint", p.checkpoint))
	}
}

// Shutdown implements kcl.IRecordProcessor.
//
// REQUESTED (the worker is stopping, or the lease moves): every window the stream proved
// complete is already flushed and checkpointed; the buffer holds only the current, unproven
// window, which is left to the next owner (flushing it would cut an object at a point a
// replay would not, and a replay would then write the same records under another key).
//
// TERMINATE (SHARD_END): the shard is closed, so every window is complete: flush, then
// Checkpoint(nil) so the child shards start. Only a processor that took every record it was
// given may end a shard: one that stopped taking records (SIGTERM during the last batch, or
// during its retries) leaves the shard open, and the next owner reads the rest and ends it.
func (p *processor) Shutdown(in *kcl.ShutdownInput) {
	defer p.release()
	if p.state == stateDead {
		return
	}
	// A flush whose commit is in flight (Iceberg output) is checkpointed once it lands, so the
	// next owner does not read it again.
	if !p.settle(settleBlock) {
		return
	}
	reason := aws.ToString(kcl.ShutdownReasonMessage(in.ShutdownReason))
	if in.ShutdownReason != kcl.TERMINATE || p.state != stateActive {
		if in.ShutdownReason == kcl.TERMINATE {
			p.log.Info("shard closed but not every record was taken: not ending it, the next owner will",
				zap.String("checkpoint", p.checkpoint))
		}
		p.log.Info("shard processor stopped", zap.String("shutdown_reason", reason), zap.String("checkpoint", p.checkpoint),
			zap.Int("records_left_for_replay", p.buf.n))
		return
	}
	p.atTip = true
	if !p.buf.empty() && !p.flush(in.Checkpointer) {
		return
	}
	// The last flush's commit (Iceberg output) lands and is checkpointed before SHARD_END:
	// the children must not start while the parent's last records may still be lost.
	if !p.settle(settleBlock) {
		return
	}
	if p.retry(opCheckpoint, "", func(context.Context) error { return in.Checkpointer.Checkpoint(nil) }) != nil {
		return
	}
	p.log.Info("shard finished", zap.String("checkpoint", "SHARD_END"))
}

// release unregisters the processor once.
func (p *processor) release() {
	p.share.close()
	p.s.mu.Lock()
	if p.s.live[p.shard] == p {
		delete(p.s.live, p.shard)
		p.s.deps.Metrics.LeasesHeld.Dec()
		p.s.retireLocked(p.shard)
	}
	p.s.mu.Unlock()
}

// forget unregisters the shard's processor when its consumer ended without Shutdown: v1.0.0
// ends a consumer silently when a lease renewal fails (lease lost, or handed over to a worker
// that claimed it through lease stealing). The library calls no method of that processor
// again; its unflushed records are replayed from the checkpoint by the next owner. Called
// from the consumer's goroutine after its last ProcessRecords (leaseGuard.RemoveLeaseOwner).
func (s *shared) forget(shardID string) {
	s.mu.Lock()
	p, ok := s.live[shardID]
	if ok {
		delete(s.live, shardID)
		s.deps.Metrics.LeasesHeld.Dec()
		s.retireLocked(shardID)
	}
	s.mu.Unlock()
	if ok {
		p.share.close()
		r := shardReport{buffered: p.pubBuffered.Load()}
		if c := p.pubCheckpoint.Load(); c != nil {
			r.checkpoint = *c
		}
		p.log.Info("shard processor ended by the library, buffer left for replay", zap.String("checkpoint", r.checkpoint),
			zap.Int64("records", r.buffered))
	}
}

// die drops the buffer and makes the processor inert; the shard's lease is given back (see
// leaseGuard) and its records after the checkpoint are replayed.
func (p *processor) die(why string, err error) {
	if p.state == stateDead {
		return
	}
	p.state = stateDead
	fields := []zap.Field{zap.String("reason", why), zap.String("checkpoint", p.checkpoint), zap.Int("records", p.buf.n), zap.Error(err)}
	if !p.buf.empty() {
		fields = append(fields, zap.String("seq_first", p.buf.first), zap.String("seq_last", p.buf.last))
	}
	p.log.Warn("dropped shard buffer for replay", fields...)
	p.buf.reset()
	p.publishBuffered()
	if why == "lease lost" {
		p.s.deps.Metrics.LeasesLost.WithLabelValues(p.shard).Inc()
	}
	if p.s.guard != nil {
		if p.writeAbandoned {
			// A cancelled upload may still commit: never release this lease, let it expire.
			p.s.guard.abandon(p.shard)
		} else {
			p.s.guard.drop(p.shard)
		}
	}
	p.release()
}
