package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

	beforeCheckpoint func() // tests: see Worker.beforeCheckpoint
	chunkRecords     int    // tests: user records per chunk of a page (see take); 0: flush.max_records

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
	// pending is the flush whose Iceberg commit is in flight (nil: none).
	pending *pendingCommit

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
	if !p.settle(false) {
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
		p.flush(in.Checkpointer)
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
	if !p.settle(true) {
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
	if !p.buf.empty() && !p.flush(in.Checkpointer) {
		return
	}
	// The last flush's commit (Iceberg output) lands and is checkpointed before SHARD_END:
	// the children must not start while the parent's last records may still be lost.
	if !p.settle(true) {
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

// take expands, decodes, enriches and buffers one batch, flushing at every boundary the data
// decides: before a Kinesis record of a later flush window, and after a Kinesis record that
// fills the buffer (never inside a KPL aggregate, so a checkpoint never skips part of one).
// It returns false when the processor stopped or died on the way (nothing of the batch is then
// kept unless a flush already made it durable and checkpointed it).
//
// The page is taken in chunks of whole Kinesis records holding at most flush.max_records user
// records (or one aggregate, of at most aggregateLimit), so memory is bounded by one chunk, not
// by the page: a 10 MB page of aggregates of tiny records would otherwise expand to millions
// of user records at once. Flush boundaries do not depend on the chunks
// (they are decided record by record against the buffer), so the objects written are the same
// whatever the chunk size.
func (p *processor) take(in *kcl.ProcessRecordsInput) bool {
	p.s.deps.Metrics.RecordsIn.WithLabelValues(p.shard).Add(float64(len(in.Records)))
	takenAt := p.s.now()
	limit := p.s.chunkRecords
	if limit <= 0 {
		limit = p.s.cfg.Flush.MaxRecords
	}
	var chunk []userRecord
	for _, r := range in.Records {
		urs := expandRecord(r, aggregateLimit(p.s.cfg.Flush))
		if len(chunk) > 0 && len(chunk)+len(urs) > limit {
			if !p.takeChunk(chunk, in.Checkpointer, takenAt) {
				return false
			}
			clear(chunk) // let the chunk's payloads and errors be collected
			chunk = chunk[:0]
		}
		chunk = append(chunk, urs...)
	}
	return len(chunk) == 0 || p.takeChunk(chunk, in.Checkpointer, takenAt)
}

// takeChunk decodes, enriches and buffers the user records of whole Kinesis records (see take).
// takenAt is when the batch was handed over: the shard's pending clock restarts there when a
// flush inside the batch leaves records behind.
func (p *processor) takeChunk(urs []userRecord, cp kcl.IRecordProcessorCheckpointer, takenAt time.Time) bool {
	cfg := p.s.cfg
	p.batch = urs
	defer func() { p.batch = nil }()
	events := make([]Event, len(urs))
	bad := make([]error, len(urs))
	var valid []int
	lim := Limits{MaxBytes: cfg.MaxEventBytes, MaxBrowseHistory: cfg.MaxBrowseHistory, RejectUnknown: cfg.UnknownFields == "reject"}
	for i := range urs {
		if urs[i].bad != nil {
			continue
		}
		events[i], bad[i] = Decode(urs[i].data, lim)
		if bad[i] != nil {
			continue
		}
		for _, f := range events[i].Unknown {
			p.s.countUnknownField(f)
		}
		p.s.countUnknownOther(events[i].UnknownOmitted)
		valid = append(valid, i)
	}
	enriched := make([]enrichment, len(urs))
	if len(valid) > 0 && !p.enrich(events, valid, enriched) {
		return false
	}
	for i := range urs {
		u := &urs[i]
		// alone: a record without an arrival time taken into an empty buffer (see fileUntimed)
		// is flushed on its own.
		alone := false
		if u.reason == ReasonMissingArrivalTime {
			alone = p.fileUntimed(u)
		}
		if u.first && !p.buf.empty() && p.buf.windowOf(u.arrival) > p.buf.window {
			if !p.flush(cp) {
				return false
			}
		}
		if p.buf.late(u.arrival) {
			p.s.deps.Metrics.LateRecords.Inc()
		}
		if p.buf.empty() {
			// A flush earlier in this batch reset the pending clock: the records taken from
			// here on wait since the batch was handed over, so a later flush that never
			// succeeds (S3 down at the tip) shows the shard stalled.
			p.health.holding(takenAt)
		}
		rejected := func(reason Reason, field, msg string) {
			p.buf.addError(ErrorRecord{Reason: reason, Field: field, Message: msg, Stream: p.s.stream, ShardID: p.shard,
				SequenceNumber: u.seq, SubSequenceNumber: u.sub, PartitionKey: u.pk, ArrivalTime: u.arrival, PayloadBase64: u.data}, len(u.data))
		}
		switch e := &enriched[i]; {
		case u.bad != nil:
			rejected(u.reason, "", u.bad.Error())
		case bad[i] != nil:
			var de *DecodeError
			errors.As(bad[i], &de)
			rejected(de.Reason, de.Field, de.Msg)
		case e.err != nil:
			rejected(ReasonRecommendFailed, "", e.err.Error())
		default:
			ev := &events[i]
			anchor := ev.Anchor()
			sim := e.similar
			if sim == nil {
				sim = []SimilarItem{}
			}
			p.buf.addRecord(OutputRecord{
				SessionID: ev.SessionID, CustomerNumber: ev.CustomerNumber, City: ev.City, Country: ev.Country,
				CreditLimit: ev.CreditLimit, BrowseHistory: ev.BrowseHistory, RecommendedItems: e.items,
				SimilarItems: Similar{ProductCode: anchor, SimilarItems: sim},
				ShardID:      p.shard, SequenceNumber: u.seq, SubSequenceNumber: u.sub, ArrivalTime: u.arrival, ModelVersion: e.version,
			}, len(u.data))
		}
		p.publishBuffered()
		p.taken++
		if u.last && (alone || p.buf.full()) && !p.flush(cp) {
			return false
		}
	}
	return true
}

// untimedEpoch files a record without an arrival time that has no record before it in its
// flush: the Unix epoch, a time no real record has, so the errors/ key says "no time".
var untimedEpoch = time.Unix(0, 0).UTC()

// fileUntimed gives a Kinesis record without ApproximateArrivalTimestamp (rejected as
// missing_arrival_time) the time its errors/ entry is filed under, deterministically: the
// buffer is a pure function of the stream since the last checkpoint, so a replay files it the
// same way. With records buffered it takes the last one's arrival time: it joins the current
// flush window and hour partition and cuts nothing. In an empty buffer it takes the Unix
// epoch and reports alone: it is then flushed on its own, so that neither a tip flush (its
// window is long over) nor the records after it can move a boundary a replay would not.
func (p *processor) fileUntimed(u *userRecord) (alone bool) {
	const msg = "; filed under "
	if p.buf.empty() {
		u.arrival = untimedEpoch
		u.bad = fmt.Errorf("%w%s%s (the Unix epoch: no record before it in its flush)", u.bad, msg, untimedEpoch.Format(time.RFC3339))
		return true
	}
	u.arrival = p.buf.lastArrival
	u.bad = fmt.Errorf("%w%sthe arrival time of the record before it in its flush, %s", u.bad, msg, u.arrival.Format(time.RFC3339Nano))
	return false
}

// enrichment is the Recommender's answer for one event, or why it has none.
type enrichment struct {
	items   []ScoredItem
	similar []SimilarItem
	version string
	err     error // deterministic failure of this record: it goes to errors/
}

// enrich asks the Recommender for the events at idx and fills out[idx], at most
// worker.recommend_batch events per call. A call that fails deterministically, or that runs
// past worker.recommend_timeout, for more than one event is split in halves and each half is
// asked again: a deterministic failure is so narrowed down to the records that fail alone
// (each confirmed with a neutral probe before it is sent to errors/, see probe and
// failure.go), and a call too slow for the timeout becomes calls small enough to finish. A
// single event that times out is an outage, never a bad record: it is retried with backoff.
// It returns false when the processor stopped or died on the way (nothing of the page is then
// kept).
func (p *processor) enrich(events []Event, idx []int, out []enrichment) bool {
	if n := p.s.cfg.RecommendBatch; len(idx) > n {
		// A call's latency grows with its users (one HNSW scan each): a whole 10,000-record
		// page in one call can outlast recommend_timeout on a large catalog and would then
		// be retried whole, forever.
		for lo := 0; lo < len(idx); lo += n {
			if !p.enrich(events, idx[lo:min(lo+n, len(idx))], out) {
				return false
			}
		}
		return true
	}
	backoff := p.s.cfg.Retry.InitialBackoff
	for {
		err := p.recommend(events, idx, out)
		switch {
		case err == nil:
			return true
		case errors.Is(err, errGaveUp):
			return false
		case len(idx) > 1:
			if errors.Is(err, errRecommendTimeout) {
				p.s.deps.Metrics.Retries.WithLabelValues(p.shard, opRecommend.String()).Inc()
				p.log.Warn("recommend call timed out, splitting it", zap.Int("records", len(idx)),
					zap.String("seq_first", p.seqOf(idx[0])), zap.String("seq_last", p.seqOf(idx[len(idx)-1])), zap.Error(err))
			}
			mid := len(idx) / 2
			return p.enrich(events, idx[:mid], out) && p.enrich(events, idx[mid:], out)
		}
		// One record fails deterministically. Is it the record, or does the recommender now
		// reject any input (a bad artifact, a schema change, a broken similar-items lookup)?
		perr := p.probe(&events[idx[0]])
		switch {
		case perr == nil:
			out[idx[0]].err = err
			p.log.Warn("record cannot be enriched, sent to errors/", zap.String("sequence_number", p.seqOf(idx[0])),
				zap.String("reason", string(ReasonRecommendFailed)), zap.Error(err))
			return true
		case errors.Is(perr, errGaveUp):
			return false
		}
		// The recommender rejects a neutral probe as well: no record is at fault. Wait as for
		// an outage; the shard shows as stalled if this lasts.
		if p.s.stopping.Load() {
			// Nothing of this page is buffered yet: leave it for the next owner. Waiting on
			// until the drain is abandoned would leave an active processor that took nothing,
			// and a closed shard could then be ended past this page.
			p.state = stateStopped
			p.log.Info("shutdown while the recommender rejects every input, batch left for replay",
				zap.String("sequence_number", p.seqOf(idx[0])), zap.String("checkpoint", p.checkpoint))
			return false
		}
		p.s.deps.Metrics.Retries.WithLabelValues(p.shard, opRecommend.String()).Inc()
		p.log.Error("recommender rejects every input, retrying", zap.String("sequence_number", p.seqOf(idx[0])),
			zap.Duration("backoff", backoff), zap.NamedError("probe_error", perr), zap.Error(err))
		if !p.pause(&backoff) {
			// The drain context ended (shutdown_timeout): never write or checkpoint again.
			p.die("shutdown deadline", err)
			return false
		}
	}
}

// probe tells a record that cannot be enriched from a recommender that cannot enrich anything:
// it asks a neutral question exercising every lookup the record's failing call made, and
// returns nil when the recommender answers it (the record is then at fault), an
// ErrDeterministic error when it rejects it too, or errGaveUp.
//
// Neutral means nothing of the record: the user is the empty feature set (every feature
// unknown), and, when the record has an anchor (so its call also looked up similar items), the
// anchor is a product the recommender itself named: the top item recommended to that neutral
// user, which the catalog therefore holds, other than the record's own anchor. Probing with
// the record's own anchor could not tell a bad anchor from a similar-items lookup that fails
// for every product (both fail), and probing without an anchor would not exercise that lookup
// at all: every record with a history would be blamed for an outage of it. The neutral user is
// asked for k+1 items so that one of them always differs from the record's anchor. A catalog
// that recommends nothing to the neutral user cannot be probed: that is treated as an outage,
// not as the record's fault.
func (p *processor) probe(ev *Event) error {
	k := p.s.deps.K
	var neutral Recommendations
	err := p.retry(opRecommend, "", func(ctx context.Context) error {
		var err error
		neutral, err = p.s.deps.Recommender.Recommend(ctx, []UserFeatures{{}}, nil, k+1)
		return err
	})
	own := ev.Anchor()
	if err != nil || own == "" {
		return err
	}
	var anchor string
	if len(neutral.ForUser) == 1 {
		for _, it := range neutral.ForUser[0] {
			if it.ID != "" && it.ID != own {
				anchor = it.ID
				break
			}
		}
	}
	if anchor == "" {
		return fmt.Errorf("%w: no product to probe the similar-items lookup with: the recommender named none for a neutral user", ErrDeterministic)
	}
	return p.retry(opRecommend, "", func(ctx context.Context) error {
		_, err := p.s.deps.Recommender.Recommend(ctx, []UserFeatures{{}}, []string{anchor}, k)
		if err != nil {
			return fmt.Errorf("probe similar items of %q: %w", anchor, err)
		}
		return nil
	})
}

// seqOf is the sequence number (and sub-sequence) of user record i of the batch being taken
// (for logs).
func (p *processor) seqOf(i int) string {
	if i >= len(p.batch) {
		return ""
	}
	if u := p.batch[i]; u.sub != 0 {
		return fmt.Sprintf("%s/%d", u.seq, u.sub)
	}
	return p.batch[i].seq
}

// recommend makes one Recommender call (retried while it fails transiently) for the events at
// idx and fills out[idx]. It returns nil, an ErrDeterministic error, errRecommendTimeout (a
// call for more than one event that ran past recommend_timeout: the caller splits it), or
// errGaveUp.
func (p *processor) recommend(events []Event, idx []int, out []enrichment) error {
	users := make([]UserFeatures, len(idx))
	var anchors []string
	seen := map[string]bool{}
	for j, i := range idx {
		ev := &events[i]
		users[j] = UserFeatures{City: ev.City, Country: ev.Country, CreditLimit: ev.CreditLimit}
		if a := ev.Anchor(); a != "" && !seen[a] {
			seen[a] = true
			anchors = append(anchors, a)
		}
	}
	// A timed-out call for several events goes back to enrich, which splits it; retrying the
	// same call would time out again. A single event that times out is an outage: retried.
	var handBack func(error) bool
	if len(idx) > 1 {
		handBack = func(err error) bool { return errors.Is(err, errRecommendTimeout) }
	}
	var recs Recommendations
	err := p.retryOr(opRecommend, "", handBack, func(ctx context.Context) error {
		var err error
		recs, err = p.s.deps.Recommender.Recommend(ctx, users, anchors, p.s.deps.K)
		if err == nil && len(recs.ForUser) != len(users) {
			err = fmt.Errorf("recommender answered %d users, asked %d", len(recs.ForUser), len(users))
		}
		return err
	})
	if err != nil {
		return err
	}
	for j, i := range idx {
		out[i] = enrichment{items: recs.ForUser[j], similar: recs.Similar[events[i].Anchor()], version: recs.Version}
	}
	return nil
}

type object struct {
	key  string // a Store key, or a table data file's location when table is set
	body []byte
	// table: a data file of the Iceberg table (Table.PutData), not a Store object.
	table bool
}

// flush writes every object of the buffer (output objects, then one errors/ object per hour
// partition of rejected records), then checkpoints at the last sequence number it holds. It
// returns false when the processor died (the buffer is then dropped).
func (p *processor) flush(cp kcl.IRecordProcessorCheckpointer) bool {
	start := time.Now()
	m := p.s.deps.Metrics
	var objs []object
	var dataFiles []string
	if p.s.deps.Table != nil {
		var ok bool
		if objs, dataFiles, ok = p.tableFiles(); !ok {
			return false
		}
	}
	for _, part := range p.buf.partitions() {
		if p.s.deps.Table != nil {
			break
		}
		body, err := encodeObject(p.s.cfg.Format, part.items)
		if err != nil {
			// A record the encoder refuses is a bug, not an outage: retrying cannot help.
			p.log.Error("encode output object", zap.Error(err))
			p.die("encode failed", err)
			return false
		}
		h := p.buf.head(part.hour)
		objs = append(objs, object{key: ObjectKey(p.s.stream, p.shard, part.hour, h.seq, h.sub, FormatExt(p.s.cfg.Format)), body: body})
	}
	for _, part := range p.buf.errorPartitions() {
		body, err := encodeErrors(part.items)
		if err != nil {
			p.log.Error("encode errors object", zap.Error(err))
			p.die("encode failed", err)
			return false
		}
		h := p.buf.head(part.hour)
		objs = append(objs, object{key: ErrorKey(p.s.stream, p.shard, part.hour, h.seq, h.sub), body: body})
	}
	var bytesOut int
	for _, o := range objs {
		put := func(ctx context.Context) error { return p.s.deps.Store.Put(ctx, o.key, bytes.NewReader(o.body)) }
		if o.table {
			put = func(ctx context.Context) error { return p.s.deps.Table.PutData(ctx, o.key, o.body) }
		}
		if p.retry(opPut, o.key, put) != nil {
			return false
		}
		bytesOut += len(o.body)
	}
	if p.s.deps.Table != nil {
		// At most one commit in flight per shard: the previous flush's lands (and is
		// checkpointed) before this one's is asked for, whose Prev is its Last.
		if !p.settle(true) {
			return false
		}
		if len(dataFiles) > 0 {
			p.submit(cp, dataFiles, len(objs), bytesOut, start)
			return true
		}
	}
	// Checkpoint only now: every object of the buffer is durable (Put returned), so a crash
	// before this line replays the buffer and rewrites the same keys.
	last := p.buf.last
	if p.s.beforeCheckpoint != nil {
		p.s.beforeCheckpoint()
	}
	if p.retry(opCheckpoint, "", func(context.Context) error { return cp.Checkpoint(aws.String(last)) }) != nil {
		return false
	}
	p.setCheckpoint(last)
	p.health.checkpointed(p.s.now())
	m.RecordsOut.WithLabelValues(p.shard).Add(float64(len(p.buf.recs)))
	for _, e := range p.buf.errs {
		m.RecordsFailed.WithLabelValues(p.shard, string(e.Reason)).Inc()
	}
	m.FlushObjects.WithLabelValues(p.shard).Add(float64(len(objs)))
	m.FlushBytes.WithLabelValues(p.shard).Add(float64(bytesOut))
	d := time.Since(start)
	m.FlushDuration.WithLabelValues(p.shard).Observe(d.Seconds())
	m.LastCheckpointTS.WithLabelValues(p.shard).SetToCurrentTime()
	fields := []zap.Field{zap.String("seq_first", p.buf.first), zap.String("seq_last", last), zap.Int("records", p.buf.n),
		zap.Int("rejected", len(p.buf.errs)), zap.Int("objects", len(objs)), zap.Int("bytes", bytesOut), zap.Duration("duration", d)}
	if len(objs) > 0 {
		fields = append(fields, zap.String("s3_key", objs[0].key))
	}
	p.log.Info("flushed batch", fields...)
	p.buf.reset()
	p.publishBuffered()
	return true
}

// errLeaseExpiring means the lease has too little time left to start a write.
var errLeaseExpiring = errors.New("lease has less than lease_safety_margin left")

// errRecommendTimeout: a Recommender call ran past worker.recommend_timeout (transient; a
// call for several events is split rather than retried whole).
var errRecommendTimeout = errors.New("recommend call ran past recommend_timeout")

// errGaveUp is what retry returns when the processor stopped or died on the way: the caller
// returns at once and takes nothing more.
var errGaveUp = errors.New("record processor gave up")

// retry runs fn with capped exponential backoff and jitter until it succeeds, and returns nil.
// It returns an ErrDeterministic error of a recommend as it is (retrying the same input cannot
// help; the caller isolates the records). It returns errGaveUp, and the processor dies, when
// the lease is lost or the worker's drain context ends; a recommend, which writes nothing,
// also gives up when shutdown is requested. Fenced ops (writes) start only while the lease
// has more than lease_safety_margin left and run with a context that ends when the lease,
// as renewed meanwhile, has less than that left, so a write is abandoned before another
// worker can take the lease. key names the object of a put (for logs).
func (p *processor) retry(o op, key string, fn func(context.Context) error) error {
	return p.retryOr(o, key, nil, fn)
}

// retryOr is retry, except that it returns at once an error for which handBack (when not nil)
// reports true: the caller has a better answer to it than trying the same call again.
func (p *processor) retryOr(o op, key string, handBack func(error) bool, fn func(context.Context) error) error {
	cfg := p.s.cfg
	backoff := cfg.Retry.InitialBackoff
	for attempt := 1; ; attempt++ {
		err := p.attempt(o, fn)
		if err == nil {
			if o == opPut {
				p.s.storageOK()
			}
			return nil
		}
		if o == opRecommend && errors.Is(err, ErrDeterministic) {
			return err
		}
		if handBack != nil && handBack(err) {
			return err
		}
		if errors.Is(err, errLeaseLost) || (o == opCheckpoint && p.s.deps.IsLeaseLost != nil && p.s.deps.IsLeaseLost(err)) {
			p.die("lease lost", err)
			return errGaveUp
		}
		if p.s.ctx.Err() != nil {
			p.writeAbandoned = o.fenced()
			p.die("shutdown deadline", err)
			return errGaveUp
		}
		if o == opRecommend && p.s.stopping.Load() {
			// Nothing of this chunk is buffered yet, and a stopped processor flushes nothing
			// (not even earlier chunks of the batch): leave it for the next owner.
			p.state = stateStopped
			p.log.Info("shutdown during retry, batch left for replay", zap.Stringer("op", o))
			return errGaveUp
		}
		if !errors.Is(err, errLeaseExpiring) {
			p.s.deps.Metrics.Retries.WithLabelValues(p.shard, o.String()).Inc()
			fields := []zap.Field{zap.Stringer("op", o), zap.Int("attempt", attempt), zap.Duration("backoff", backoff), zap.Error(err)}
			if key != "" {
				fields = append(fields, zap.String("s3_key", key))
			}
			if code, ok := permanentStorageCode(err); ok && o == opPut {
				// No retry fixes this until an operator does: say so loudly, keep the batch.
				p.s.storageFailed(code, key)
				p.log.Error("object storage refuses writes; fix the bucket or the task role, retrying",
					append(fields, zap.String("bucket", p.s.bucket()), zap.String("action", "s3:PutObject"), zap.String("code", code))...)
			} else {
				p.log.Warn("retrying", fields...)
			}
		}
		if !p.pause(&backoff) {
			if p.s.ctx.Err() != nil {
				p.writeAbandoned = o.fenced()
				p.die("shutdown deadline", err)
			}
			return errGaveUp
		}
	}
}

// pause sleeps for a jittered *backoff (full jitter in [backoff/2, backoff)), then doubles it up
// to retry.max_backoff. It returns false, early, when the drain context ends.
func (p *processor) pause(backoff *time.Duration) bool {
	b := *backoff
	sleep := b/2 + time.Duration(rand.Int64N(int64(b/2)+1))
	t := time.NewTimer(sleep)
	defer t.Stop()
	select {
	case <-p.s.ctx.Done():
		return false
	case <-t.C:
	}
	*backoff = min(b*2, p.s.cfg.Retry.MaxBackoff)
	return true
}

var errLeaseLost = errors.New("lease lost")

func (p *processor) attempt(o op, fn func(context.Context) error) error {
	// Even an op that writes nothing stops when the lease is gone: the library ends the shard
	// consumer only after ProcessRecords returns.
	until, ok := p.s.lease.HeldUntil(p.shard)
	left := time.Until(until)
	if !ok || left <= 0 {
		return errLeaseLost
	}
	if !o.fenced() {
		ctx, cancel := context.WithTimeoutCause(p.s.ctx, p.s.cfg.RecommendTimeout, errRecommendTimeout)
		defer cancel()
		err := fn(ctx)
		if err != nil && errors.Is(context.Cause(ctx), errRecommendTimeout) {
			// Whatever the call says once its deadline has passed (a cancelled query, a
			// closed connection) is the timeout's doing, never a verdict on the input: %v
			// keeps an ErrDeterministic it may carry from sending a slow record to errors/.
			return fmt.Errorf("%w (%s): %v", errRecommendTimeout, p.s.cfg.RecommendTimeout, err)
		}
		return err
	}
	if left <= p.s.cfg.LeaseSafetyMargin {
		return errLeaseExpiring
	}
	ctx, cancel := p.leaseContext()
	defer cancel()
	err := fn(ctx)
	if err != nil && errors.Is(context.Cause(ctx), errLeaseExpiring) {
		return errLeaseExpiring
	}
	return err
}

// leaseContext is the context of one fenced write: it ends when the lease, as renewed while
// the write runs, has less than lease_safety_margin left (or when the drain context ends).
// A deadline fixed when the attempt starts would cut a slow upload short although renewals
// keep the lease safe.
func (p *processor) leaseContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(p.s.ctx)
	margin := p.s.cfg.LeaseSafetyMargin
	left := func() time.Duration {
		until, ok := p.s.lease.HeldUntil(p.shard)
		if !ok {
			return 0
		}
		return time.Until(until) - margin
	}
	t := time.NewTimer(max(left(), 0))
	go func() {
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			d := left()
			if d <= 0 {
				cancel(errLeaseExpiring)
				return
			}
			t.Reset(d)
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}
