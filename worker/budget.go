package worker

import (
	"sync"
	"sync/atomic"
	"time"

	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// The worker-wide budget for buffered bytes (worker.buffer_budget_bytes).
//
// What a shard holds in memory is its buffer (up to flush.max_records / flush.max_bytes of
// enriched records) plus the GetRecords page it is taking (up to worker.max_records records,
// 10 MB). Neither is bounded across shards by the flush limits: 64 backlogged shards could
// hold 64 full buffers and 64 pages at once. The budget bounds their sum with backpressure
// instead of cutting anything: a shard that took a page charges its buffer, reserves the size
// of that page for the next one, and when the reservation does not fit it waits at the end of
// ProcessRecords, before the library fetches the next page. It never drops a record and never
// flushes early or late: the buffer's cut points are decided by the data alone (buffer.go), so
// object keys stay a pure function of the stream whatever the budget.
//
// Deadlock: charges are released by flushes, and a flush needs more data (a record of a later
// window, a full buffer) or an empty read at the tip, which a waiting shard never gets. If
// every shard holding bytes waited for room, none would ever flush. So when the budget is
// spent and no other shard is inside ProcessRecords (where it could still flush), the waiter
// holding the most bytes, the one nearest to a flush, gets the overdraft: it may exceed the
// budget, one page at a time, until its buffer shrinks (a flush) or its page fits again. Only
// one shard holds the overdraft at a time, so the overshoot is about one buffer and one page,
// not one per shard. Shards outside ProcessRecords (fetching, idle at the tip) do not block
// the overdraft: they already have their next page reserved, and a shard idle at the tip
// releases its window by the tip rule without taking a page. An overdraft holder that reaches
// the tip keeps the overdraft until its window closes there (flush.max_age + window_grace at
// most): the others wait for room meanwhile rather than for a second overdraft.
//
// What the budget does not bound: a page the library fetched for a shard that reserved
// nothing (its previous read was empty: at the tip, one page per shard whose traffic resumes),
// and the transient decode of a page.

// Estimated memory per record, calibrated on the processing path (heap measured around one
// 10,000-record page with K = 5; see docs/benchmarks.md). A page record costs its payload
// twice (the SDK's bytes, then the decoded event's strings while the page is taken) plus the
// SDK Record and the take's per-record state (event, enrichment): pageRecordOverhead. A
// buffered record costs its payload, the OutputRecord with its recommended and similar items,
// and what encoding it at the flush allocates (about 1.3 KB a record for Parquet, the largest
// part): bufferRecordOverhead + 2k × bufferItemOverhead. Estimates of what the worker keeps and
// allocates for it, not of the Go heap's slack (GOMEMLIMIT bounds that).
const (
	pageRecordOverhead   = 512
	bufferRecordOverhead = 1536
	bufferItemOverhead   = 48 // per recommended or similar item (id string + score)
)

// budgetPoll is how often a waiting shard re-checks shutdown and its lease.
const budgetPoll = 100 * time.Millisecond

// budgetWaitLog: a shard that waits longer than this for budget says so (Info).
const budgetWaitLog = 5 * time.Second

// pageCost is the estimated memory of a GetRecords page.
func pageCost(recs []ktypes.Record) int64 {
	n := int64(len(recs)) * pageRecordOverhead
	for i := range recs {
		n += 2 * int64(len(recs[i].Data))
	}
	return n
}

// bufferCost is the estimated memory of a shard's buffer with k recommended and k similar
// items per record.
func bufferCost(b *buffer, k int) int64 {
	return int64(b.bytes) + int64(b.n)*(bufferRecordOverhead+int64(2*k)*bufferItemOverhead)
}

// memBudget is the worker-wide budget. Safe for concurrent use.
type memBudget struct {
	limit  int64
	inUse  prometheus.Gauge // may be nil
	waited prometheus.Histogram
	// typical is the cost of the last non-empty page any shard took: what a shard starting on
	// a backlog reserves for its first page (see reserveFirstPage).
	typical atomic.Int64

	mu      sync.Mutex
	used    int64
	peak    int64 // highest used (tests)
	waiters int
	shares  map[*budgetShare]struct{}
	// overdraft: the one share allowed past the limit (see above), or nil.
	overdraft *budgetShare
	wake      chan struct{} // closed (and replaced) whenever a waiter may now be admitted
}

func newMemBudget(limit int64, m *Metrics) *memBudget {
	b := &memBudget{limit: limit, shares: map[*budgetShare]struct{}{}, wake: make(chan struct{})}
	if m != nil {
		b.inUse, b.waited = m.BudgetInUse, m.BudgetWait
	}
	return b
}

// budgetShare is one shard processor's part of the budget. Its methods are called from the
// shard's consumer goroutine only; a nil share (no budget: processors driven directly in
// tests, replay) does nothing.
type budgetShare struct {
	b       *memBudget
	shard   string
	held    int64 // charged: buffer, plus the page being taken or reserved for the next one
	buf     int64 // buffer cost at the last settle: a smaller one means a flush
	running bool  // inside ProcessRecords, between page and settle: may grow without asking
	waiting bool
	closed  bool
}

// join adds a shard's share; nil budget: nil share.
func (b *memBudget) join(shard string) *budgetShare {
	if b == nil {
		return nil
	}
	s := &budgetShare{b: b, shard: shard}
	b.mu.Lock()
	b.shares[s] = struct{}{}
	b.mu.Unlock()
	return s
}

// broadcastLocked wakes every waiter to re-check.
func (b *memBudget) broadcastLocked() {
	close(b.wake)
	b.wake = make(chan struct{})
}

// setWaitingLocked marks s waiting or not, counting the waiters.
func (b *memBudget) setWaitingLocked(s *budgetShare, w bool) {
	if s.waiting != w {
		s.waiting = w
		if w {
			b.waiters++
		} else {
			b.waiters--
		}
	}
}

// setLocked charges n for s (never blocks); a smaller charge wakes the waiters.
func (b *memBudget) setLocked(s *budgetShare, n int64) {
	if s.closed {
		return
	}
	d := n - s.held
	s.held = n
	b.used += d
	b.peak = max(b.peak, b.used)
	if b.inUse != nil {
		b.inUse.Set(float64(b.used))
	}
	if d < 0 {
		b.broadcastLocked()
	}
}

// admitLocked reports whether s may add extra bytes now: they fit, or s holds the overdraft,
// or it is free, no other shard can release anything by itself (none is running) and s is the
// waiter holding the most (ties: the lowest shard id): s then takes the overdraft, so that
// some shard always moves on to its next flush.
func (b *memBudget) admitLocked(s *budgetShare, extra int64) bool {
	if extra <= 0 || b.used+extra <= b.limit {
		if b.overdraft == s {
			b.overdraft = nil
		}
		return true
	}
	if b.overdraft == s {
		return true
	}
	if b.overdraft != nil {
		return false
	}
	for o := range b.shares {
		if o == s {
			continue
		}
		if o.running {
			return false
		}
		if o.waiting && (o.held > s.held || (o.held == s.held && o.shard < s.shard)) {
			return false
		}
	}
	b.overdraft = s
	return true
}

// ask asks for the share to become buf (the shard's buffer cost) plus more (the page it is
// about to take, or the one the library fetches next). It returns nil when granted (the share
// is then running if run, inside ProcessRecords, where it may grow without asking), or a
// channel closed when it is worth asking again (or giving up with cancel). Asking for less
// than the share holds is always granted.
func (s *budgetShare) ask(buf, more int64, run bool) <-chan struct{} {
	if s == nil {
		return nil
	}
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed {
		return nil
	}
	wasRunning := s.running
	s.running = false
	if b.overdraft == s && buf < s.buf {
		b.overdraft = nil // it flushed: its window closed, the overdraft did its job
	}
	s.buf = buf
	want := buf + more
	granted := want <= s.held || b.admitLocked(s, want-s.held)
	if granted {
		b.setWaitingLocked(s, false)
		b.setLocked(s, want)
		s.running = run
	} else {
		b.setWaitingLocked(s, true)
	}
	if wasRunning && b.waiters > 0 {
		// A shard that stops running may be the last one a waiter's overdraft waited for
		// (and one that starts waiting may now hold the most).
		b.broadcastLocked()
	}
	if granted {
		return nil
	}
	return b.wake
}

// cancel gives up waiting (shutdown, lease lost): s keeps its buffer's charge, reserves nothing.
func (s *budgetShare) cancel() {
	if s == nil {
		return
	}
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setWaitingLocked(s, false)
	s.running = false
	if b.overdraft == s {
		b.overdraft = nil
	}
	b.broadcastLocked()
}

// close releases everything s holds; s does nothing afterwards. Idempotent.
func (s *budgetShare) close() {
	if s == nil {
		return
	}
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed {
		return
	}
	b.setLocked(s, 0)
	b.setWaitingLocked(s, false)
	s.running = false
	if b.overdraft == s {
		b.overdraft = nil
	}
	s.closed = true
	delete(b.shares, s)
	b.broadcastLocked()
}

// startBudget charges the page the processor is about to take. A page larger than what the
// shard reserved for it (its first, or one after empty reads) waits, before it is taken, for
// room or the overdraft: the page is in memory already, its enriched records are not yet. It
// returns false when the processor stopped or died meanwhile (the page is left for replay).
func (p *processor) startBudget(recs []ktypes.Record) bool {
	c := pageCost(recs)
	if p.share != nil && c > 0 {
		p.share.b.typical.Store(c)
	}
	return p.awaitBudget(c, true)
}

// reserveFirstPage ends Initialize: the library fetches the shard's first page as soon as it
// returns, and a worker taking many backlogged shards at once (start-up, a take-over) would
// otherwise hold one unreserved page per shard while they wait in startBudget. It reserves a
// page as large as the last one taken, waiting for room, but only while the lease is safe:
// the library renews it only after Initialize, so the wait ends lease_safety_margin before the
// lease would expire (the page then waits in startBudget, where renewals run). Shutdown ends
// the wait too; the next call stops the processor.
func (p *processor) reserveFirstPage() {
	sh := p.share
	if sh == nil {
		return
	}
	more := sh.b.typical.Load()
	wake := sh.ask(0, more, false)
	if wake == nil {
		return
	}
	start := time.Now()
	tick := time.NewTicker(budgetPoll)
	defer tick.Stop()
	for {
		select {
		case <-wake:
		case <-tick.C:
		case <-p.s.ctx.Done():
		}
		until, ok := p.s.lease.HeldUntil(p.shard)
		if p.s.ctx.Err() != nil || p.s.stopping.Load() || !ok || time.Until(until) <= p.s.cfg.LeaseSafetyMargin {
			sh.cancel()
			p.log.Info("first page not reserved, taken when it arrives", zap.Duration("waited", time.Since(start)))
			return
		}
		if wake = sh.ask(0, more, false); wake == nil {
			if sh.b.waited != nil {
				sh.b.waited.Observe(time.Since(start).Seconds())
			}
			return
		}
	}
}

// settleBudget ends a ProcessRecords call of an active processor: it charges the buffer and
// reserves room for the next page (as large as this one), waiting while the budget is spent,
// before the library fetches it.
func (p *processor) settleBudget(recs []ktypes.Record) {
	if p.share == nil {
		return
	}
	if p.state != stateActive {
		p.share.ask(bufferCost(p.buf, p.s.deps.K), 0, false)
		return
	}
	next := int64(0) // after an empty read the next page is as likely empty; a surprise waits in startBudget
	if len(recs) > 0 {
		next = pageCost(recs)
	}
	p.awaitBudget(next, false)
}

// awaitBudget asks for the buffer plus more bytes and waits until they are granted. The wait
// ends early when shutdown is requested (taking reports false: the page is not taken and the
// processor stops; otherwise the next call stops it), and kills the processor when the drain
// is abandoned or the lease is gone. The library renews leases from its own goroutine, so a
// shard waiting holds its lease exactly as long as one processing would, and no longer.
func (p *processor) awaitBudget(more int64, taking bool) bool {
	sh := p.share
	if sh == nil {
		return true
	}
	cost := func() int64 { return bufferCost(p.buf, p.s.deps.K) }
	wake := sh.ask(cost(), more, taking)
	if wake == nil {
		return true
	}
	start := time.Now()
	logged := false
	tick := time.NewTicker(budgetPoll)
	defer tick.Stop()
	defer func() {
		if sh.b.waited != nil {
			sh.b.waited.Observe(time.Since(start).Seconds())
		}
	}()
	for {
		select {
		case <-wake:
		case <-tick.C:
		case <-p.s.ctx.Done():
		}
		switch {
		case p.s.ctx.Err() != nil:
			sh.cancel()
			p.die("shutdown deadline", p.s.ctx.Err())
			return false
		case p.s.stopping.Load():
			sh.cancel()
			if taking {
				p.state = stateStopped // nothing of this page is taken: the next owner reads it
				p.log.Info("shutdown while waiting for buffer budget, page left for replay", zap.String("checkpoint", p.checkpoint))
			}
			return false
		}
		if until, ok := p.s.lease.HeldUntil(p.shard); !ok || !time.Now().Before(until) {
			sh.cancel()
			p.die("lease lost", errLeaseLost)
			return false
		}
		if !logged && time.Since(start) >= budgetWaitLog {
			logged = true
			p.log.Info("shard waiting for buffer budget", zap.Duration("waited", time.Since(start)),
				zap.Int("buffered", p.buf.n), zap.Int64("page_bytes", more))
		}
		if wake = sh.ask(cost(), more, taking); wake == nil {
			if logged {
				p.log.Info("shard got buffer budget", zap.Duration("waited", time.Since(start)))
			}
			return true
		}
	}
}

// softLimitHeadroom is what a worker process holds besides the budgeted buffers and pages: the
// Go runtime, connection pools, the model's lookups, the library's state per shard.
const softLimitHeadroom = 192 << 20

// SoftMemoryLimit is the Go soft memory limit (debug.SetMemoryLimit) a worker process sets
// unless GOMEMLIMIT is given: the buffer budget plus headroom. Without it the garbage
// collector lets the heap grow to twice the live set, so a worker whose buffers stay within
// the budget could still double its resident set with garbage.
func SoftMemoryLimit(cfg Config) int64 { return cfg.BufferBudgetBytes + softLimitHeadroom }
