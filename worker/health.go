package worker

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// shardHealth is what a processor publishes about its progress, for the monitor and /readyz.
// Written by the shard's consumer goroutine, read from any goroutine (atomics, unix nanos, 0
// meaning unset).
type shardHealth struct {
	lastCheckpoint atomic.Int64 // last checkpoint written, or when the processor started
	pendingSince   atomic.Int64 // since when it holds records not yet checkpointed
	inFlightSince  atomic.Int64 // since when it is inside ProcessRecords (the library fetches nothing meanwhile)
	behindMillis   atomic.Int64 // MillisBehindLatest of the last GetRecords
	behindAt       atomic.Int64 // when that was reported
}

func (h *shardHealth) started(now time.Time) {
	h.lastCheckpoint.Store(now.UnixNano())
	h.pendingSince.Store(0)
}

func (h *shardHealth) checkpointed(now time.Time) {
	h.lastCheckpoint.Store(now.UnixNano())
	h.pendingSince.Store(0)
}

// holding records that a checkpoint does not cover yet, first seen at now. checkpointed
// clears the clock, so take calls this again when records stay buffered after a flush inside
// a batch: otherwise a shard whose next flush never succeeds would never show as stalled.
func (h *shardHealth) holding(now time.Time) {
	h.pendingSince.CompareAndSwap(0, now.UnixNano())
}

func (h *shardHealth) enter(now time.Time, millisBehind int64) {
	h.inFlightSince.Store(now.UnixNano())
	h.behindMillis.Store(millisBehind)
	h.behindAt.Store(now.UnixNano())
}

func (h *shardHealth) leave() { h.inFlightSince.Store(0) }

// shardView is one shard's state as the monitor computes it.
type shardView struct {
	shard           string
	checkpointAge   time.Duration
	millisBehind    int64
	stalled         bool
	pendingFor      time.Duration
	lastCheckpointT time.Time
}

// view computes the shard's gauges at now. While the processor is inside ProcessRecords (a
// retry loop, a slow flush) the library reads nothing, so the reported lag is extrapolated:
// it grows with the time spent there. A shard is stalled when it holds records and has not
// checkpointed for longer than stallAfter.
func (h *shardHealth) view(shard string, now time.Time, stallAfter time.Duration) shardView {
	v := shardView{shard: shard, millisBehind: h.behindMillis.Load()}
	if lc := h.lastCheckpoint.Load(); lc != 0 {
		v.lastCheckpointT = time.Unix(0, lc)
		v.checkpointAge = now.Sub(v.lastCheckpointT)
	}
	if in := h.inFlightSince.Load(); in != 0 {
		if at := h.behindAt.Load(); at != 0 {
			v.millisBehind += now.Sub(time.Unix(0, at)).Milliseconds()
		}
	}
	if ps := h.pendingSince.Load(); ps != 0 {
		since := time.Unix(0, ps)
		if v.lastCheckpointT.After(since) {
			since = v.lastCheckpointT
		}
		v.pendingFor = now.Sub(since)
		v.stalled = v.pendingFor > stallAfter
	}
	return v
}

// observe updates every live shard's gauges, deletes the series of shards released long
// enough ago (sweepLocked) and returns the stalled ones, sorted by shard.
func (s *shared) observe(now time.Time) []shardView {
	m := s.deps.Metrics
	var stalled []shardView
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	for id, p := range s.live {
		v := p.health.view(id, now, s.cfg.StallAfter)
		m.CheckpointAge.WithLabelValues(id).Set(v.checkpointAge.Seconds())
		m.MillisBehind.WithLabelValues(id).Set(float64(v.millisBehind))
		st := 0.0
		if v.stalled {
			st = 1
			stalled = append(stalled, v)
		}
		m.ShardStalled.WithLabelValues(id).Set(st)
	}
	sort.Slice(stalled, func(i, j int) bool { return stalled[i].shard < stalled[j].shard })
	return stalled
}

// shardSeriesRetention is how long a released shard's counters and histograms stay exported
// before they are deleted: longer than any scrape interval, so the increments of its last
// moments (leases_lost_total is incremented exactly when a shard goes) are scraped once.
const shardSeriesRetention = 2 * time.Minute

// shardVecs are the vectors labelled shard_id: every series of a shard, whatever its other
// labels (op, reason), is deleted when this worker stops processing the shard.
func (m *Metrics) shardVecs() []*prometheus.MetricVec {
	return []*prometheus.MetricVec{m.RecordsIn.MetricVec, m.RecordsOut.MetricVec, m.RecordsFailed.MetricVec,
		m.MillisBehind.MetricVec, m.FlushObjects.MetricVec, m.FlushBytes.MetricVec, m.FlushDuration.MetricVec,
		m.Retries.MetricVec, m.LeasesLost.MetricVec, m.LastCheckpointTS.MetricVec, m.CheckpointAge.MetricVec,
		m.ShardStalled.MetricVec}
}

// deleteShardGauges removes the shard's gauges when this worker stops processing it (lease
// lost, handed over, shard ended), so a stale lag, age or stalled value does not fire an alert
// after a rebalance.
func (m *Metrics) deleteShardGauges(shard string) {
	m.MillisBehind.DeleteLabelValues(shard)
	m.LastCheckpointTS.DeleteLabelValues(shard)
	m.CheckpointAge.DeleteLabelValues(shard)
	m.ShardStalled.DeleteLabelValues(shard)
}

// deleteShardSeries removes every series of the shard, of every shard_id vector, so a process
// that held many shards over time (resharding, lease moves) exports series only for the
// shards it holds now (and those released within shardSeriesRetention).
func (m *Metrics) deleteShardSeries(shard string) {
	for _, v := range m.shardVecs() {
		v.DeletePartialMatch(prometheus.Labels{"shard_id": shard})
	}
}

// retireLocked notes that this worker stopped processing shard (s.mu held): its gauges go at
// once, its other series after shardSeriesRetention (sweepLocked), unless it comes back.
func (s *shared) retireLocked(shard string) {
	s.deps.Metrics.deleteShardGauges(shard)
	if s.retired == nil {
		s.retired = map[string]time.Time{}
	}
	s.retired[shard] = s.now()
}

// sweepLocked deletes the series of the shards retired for shardSeriesRetention (s.mu held).
func (s *shared) sweepLocked(now time.Time) {
	for id, at := range s.retired {
		if _, live := s.live[id]; !live && now.Sub(at) >= shardSeriesRetention {
			s.deps.Metrics.deleteShardSeries(id)
			delete(s.retired, id)
		}
	}
}

// maxUnknownFieldLabels caps the distinct field names unknown_fields_total carries; a producer
// sending random keys cannot grow the series without bound. Later names count as "other".
const maxUnknownFieldLabels = 32

// fieldNames tracks which unknown field names have a series of their own.
type fieldNames struct {
	mu    sync.Mutex
	names map[string]bool
}

func (s *shared) countUnknownField(name string) {
	label := "other"
	s.unknown.mu.Lock()
	if s.unknown.names == nil {
		s.unknown.names = map[string]bool{}
	}
	if s.unknown.names[name] {
		label = name
	} else if len(s.unknown.names) < maxUnknownFieldLabels && len(name) <= 128 {
		s.unknown.names[name] = true
		label = name
	}
	s.unknown.mu.Unlock()
	s.deps.Metrics.UnknownFields.WithLabelValues(label).Inc()
}

// countUnknownOther counts n unknown field names an event carried beyond what Decode lists
// (Event.UnknownOmitted) under "other".
func (s *shared) countUnknownOther(n int) {
	if n > 0 {
		s.deps.Metrics.UnknownFields.WithLabelValues("other").Add(float64(n))
	}
}

// storageProblem is the last permanent object-storage error, cleared by a successful put.
type storageProblem struct {
	code string
	key  string
	at   time.Time
}

func (s *shared) storageFailed(code, key string) {
	s.storageErr.Store(&storageProblem{code: code, key: key, at: s.now()})
	s.deps.Metrics.StoragePermanentErrors.WithLabelValues(s.bucket(), code).Inc()
}

func (s *shared) storageOK() {
	if s.storageErr.Load() != nil {
		s.storageErr.Store(nil)
	}
}

// bucket names the output location for logs and labels: s3://bucket (no prefix) or file://.
func (s *shared) bucket() string {
	u := s.deps.Store.URL("")
	if rest, ok := strings.CutPrefix(u, "s3://"); ok {
		b, _, _ := strings.Cut(rest, "/")
		return b
	}
	return u
}

// health reports why this worker is not fit to serve: stalled shards and a permanent storage
// error. nil when neither.
func (s *shared) health(now time.Time) error {
	var problems []string
	for _, v := range s.observe(now) {
		problems = append(problems, fmt.Sprintf("shard %s stalled: records waiting %s, last checkpoint %s ago (worker.stall_after %s)",
			v.shard, v.pendingFor.Round(time.Second), v.checkpointAge.Round(time.Second), s.cfg.StallAfter))
	}
	if sp := s.storageErr.Load(); sp != nil {
		problems = append(problems, fmt.Sprintf("object storage refuses writes: %s on s3:PutObject to %s (bucket %s)", sp.code, s.deps.Store.URL(sp.key), s.bucket()))
	}
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "; "))
}

// logStalls logs each stalled shard at error level (the monitor calls it every tick; a stall
// is logged once per stall_after so the log does not flood).
func (s *shared) logStalls(log *zap.Logger, views []shardView, last map[string]time.Time, now time.Time) {
	for _, v := range views {
		if t, ok := last[v.shard]; ok && now.Sub(t) < s.cfg.StallAfter {
			continue
		}
		last[v.shard] = now
		log.Error("shard stalled: records are not being checkpointed", zap.String("shard_id", v.shard),
			zap.Duration("pending", v.pendingFor), zap.Duration("checkpoint_age", v.checkpointAge),
			zap.Int64("millis_behind", v.millisBehind), zap.Duration("stall_after", s.cfg.StallAfter))
	}
}
