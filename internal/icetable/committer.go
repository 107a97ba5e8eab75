package icetable

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"
	"go.uber.org/zap"
)

// ErrPositionMoved: the table's position of the shard is not the one this commit follows, so
// another owner (a worker that held the lease before, still finishing) committed records this
// writer also holds, or the writer's view is stale. Committing would duplicate or lose records:
// the writer must stop and let the shard be taken from the table's position.
var ErrPositionMoved = errors.New("iceberg: shard position moved underneath this writer")

// Request is one shard flush to commit: data files already PUT under their deterministic
// paths, the shard's position the files follow (Prev: what the table says before them) and
// the position they end at (Last: the flush's last record, valid or rejected).
type Request struct {
	Shard ShardKey
	Files []string
	Prev  Position
	Last  Position
	// Urgent: the shard is caught up (the flush closed its window at the stream's tip, or
	// Hurry was called), so nothing more is coming soon to fold into the commit: it goes after
	// the gathering pause, not at the next commit_interval tick, while the committer's urgent
	// budget allows (urgentBurst, then one per interval). This takes the wait for the tick off
	// the put→visible latency at low traffic and off the end of a drain.
	Urgent bool

	ctx  context.Context
	done chan error
}

// Committer commits the data files of every shard of one worker, at most once per interval,
// in one snapshot per commit. Each commit is a compare-and-swap on the table's current
// snapshot (AssertRefSnapshotID), so a conflicting commit of another worker makes it reload
// the table and check every shard's position again instead of rebasing blindly.
type Committer struct {
	cat      catalog.Catalog
	ident    table.Identifier
	interval time.Duration
	log      *zap.Logger
	// Commits, if set, observes each commit attempt's outcome ("ok", "conflict", "error") and
	// duration.
	Observe func(outcome string, d time.Duration)

	mu       sync.Mutex
	pending  []*Request
	location string
	kick     chan struct{} // a request is pending

	// last is the table as this committer's last commit left it, and its shard positions:
	// the next commit starts from it instead of loading the table again (a catalog read and a
	// metadata.json GET). It is only a starting point: the commit asserts that this snapshot
	// is still the table's current one, so another writer's commit in between makes it fail
	// as a conflict, and the retry loads the table. Run's goroutine alone uses it.
	last *loaded
}

// loaded is a table and the shard positions its current snapshot says.
type loaded struct {
	tbl *table.Table
	pos map[ShardKey]Position
}

// NewCommitter loads (or creates) the table and returns its committer.
func NewCommitter(ctx context.Context, cat catalog.Catalog, cfg Config, warehouse string, log *zap.Logger) (*Committer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tbl, err := Ensure(ctx, cat, cfg, warehouse)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Committer{cat: cat, ident: cfg.Ident(), interval: cfg.CommitInterval, log: log.With(zap.String("component", "iceberg")),
		location: strings.TrimSuffix(tbl.Location(), "/"), kick: make(chan struct{}, 1)}, nil
}

// Location is the table's root location; data files go under <Location>/data/.
func (c *Committer) Location() string { return c.location }

// DataPath is the deterministic location of a shard's data file for the hour partition of
// hour, named after the first record the flush took in that hour (as the Hive keys are).
func (c *Committer) DataPath(hour time.Time, name string) string {
	return fmt.Sprintf("%s/data/arrival_time_hour=%s/%s", c.location, hour.UTC().Format("2006-01-02-15"), name)
}

// Position reads the shard's last committed position from the table as it is now.
func (c *Committer) Position(ctx context.Context, shard ShardKey) (Position, error) {
	tbl, err := c.cat.LoadTable(ctx, c.ident)
	if err != nil {
		return Position{}, fmt.Errorf("load iceberg table: %w", err)
	}
	pos, err := Positions(tbl.Metadata())
	if err != nil {
		return Position{}, err
	}
	return pos[shard], nil
}

// Commit queues the request and waits until it is committed (nil), refused (ErrPositionMoved)
// or ctx ends. A request whose ctx ended before its commit started is never committed; one
// that ended while its commit was in flight may still land: the table's positions, not this
// return value, are the truth a later owner reads.
func (c *Committer) Commit(ctx context.Context, r Request) error {
	done := c.Submit(ctx, r)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Submit queues the request and returns at once; the channel receives its answer, as Commit
// returns it (ctx.Err() when ctx ended before its commit started). Requests are considered in
// the order they were submitted, so a writer may submit a shard's next flush (Prev: the Last of
// the one before) before the one before has landed: both land in order, in one snapshot or
// two, and if the first is refused or dropped the second is refused too.
func (c *Committer) Submit(ctx context.Context, r Request) <-chan error {
	done := make(chan error, 1)
	if len(r.Files) == 0 {
		done <- errors.New("iceberg commit: no files")
		return done
	}
	r.ctx, r.done = ctx, done
	c.mu.Lock()
	c.pending = append(c.pending, &r)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return done
}

// urgentBurst is how many commits urgent requests may make between the interval's ticks in a
// burst; beyond it they earn one per interval. A drain's tail needs one or two (the flushes a
// shard made while behind, hurried, then its flush at the tip); with 1 s windows every shard
// is at the tip at every window's end, and without the budget each of those flushes would be a
// commit of its own (about 2 a second per worker measured, where the ticks make 12 a minute).
const urgentBurst = 3

// Run commits what is pending until ctx ends, then commits once more what is still pending
// (the worker's drain waits for it through Commit's contexts). Commits start at most once per
// interval: a request that finds the last commit an interval old is committed after a short
// gathering pause (so shards flushing together share a snapshot), others wait for the
// interval to pass, unless an urgent request (a caught-up shard's) is pending and the urgent
// budget allows (urgentBurst, then one per interval), which needs the gathering pause only. At
// low traffic a flush is committed in about one commit's time, at high traffic a worker makes
// at most two commits per interval.
func (c *Committer) Run(ctx context.Context) error {
	gather := min(c.interval/10, 50*time.Millisecond)
	var last time.Time
	budget := urgentBudget{tokens: urgentBurst, at: time.Now(), per: c.interval}
	for {
		select {
		case <-ctx.Done():
			c.flushPending(context.WithoutCancel(ctx), true)
			return nil
		case <-c.kick:
		}
		at := time.Now().Add(gather)
		hurry := func() bool { return c.urgentPending() && budget.available(time.Now()) }
		if !hurry() {
			at = maxTime(at, last.Add(c.interval))
		}
		if !c.waitUntil(ctx, at, gather, hurry) {
			c.flushPending(context.WithoutCancel(ctx), true)
			return nil
		}
		now := time.Now()
		if now.Before(last.Add(c.interval)) {
			budget.spend(now) // ahead of the tick: an urgent commit
		}
		last = now
		c.flushPending(ctx, false)
		c.mu.Lock()
		more := len(c.pending) > 0
		c.mu.Unlock()
		if more {
			select {
			case c.kick <- struct{}{}:
			default:
			}
		}
	}
}

// urgentBudget is a token bucket of commits ahead of the interval's tick: urgentBurst at most,
// one earned per interval.
type urgentBudget struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
	per    time.Duration
}

func (b *urgentBudget) refill(now time.Time) {
	b.tokens = min(urgentBurst, b.tokens+float64(now.Sub(b.at))/float64(b.per))
	b.at = now
}

func (b *urgentBudget) available(now time.Time) bool {
	b.refill(now)
	return b.tokens >= 1
}

func (b *urgentBudget) spend(now time.Time) {
	b.refill(now)
	b.tokens = max(0, b.tokens-1)
}

// waitUntil waits until at, or until hurry says an urgent request may go and the gathering
// pause after it has passed; false when ctx ended.
func (c *Committer) waitUntil(ctx context.Context, at time.Time, gather time.Duration, hurry func() bool) bool {
	for {
		t := time.NewTimer(time.Until(at))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
			return true
		case <-c.kick:
			t.Stop()
			if hurry() {
				at = minTime(at, time.Now().Add(gather))
			}
		}
	}
}

// Hurry makes the shard's requests still waiting for the tick urgent: the shard reached the
// stream's tip with flushes made while it was behind (cut by flush.max_records, so not urgent
// themselves), and nothing more is coming to fold into their commit. It reports whether any
// request of the shard was still waiting (one already being committed is not).
func (c *Committer) Hurry(shard ShardKey) bool {
	c.mu.Lock()
	found := false
	for _, r := range c.pending {
		if r.Shard == shard {
			r.Urgent, found = true, true
		}
	}
	c.mu.Unlock()
	if found {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return found
}

func (c *Committer) urgentPending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.pending {
		if r.Urgent {
			return true
		}
	}
	return false
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// flushPending commits the pending requests, retrying conflicts at once and other failures
// with backoff, until every request is answered or its context ended.
func (c *Committer) flushPending(ctx context.Context, final bool) {
	c.mu.Lock()
	reqs := c.pending
	c.pending = nil
	c.mu.Unlock()
	backoff := 100 * time.Millisecond
	for len(reqs) > 0 {
		reqs = live(reqs)
		if len(reqs) == 0 {
			return
		}
		start := time.Now()
		left, err := c.commitOnce(ctx, reqs)
		d := time.Since(start)
		switch {
		case err == nil:
			c.observe("ok", d)
			return
		case isConflict(err):
			// Another writer committed first: reload and check positions again.
			c.observe("conflict", d)
			c.log.Info("iceberg commit conflict, retrying", zap.Int("shards", len(left)), zap.Duration("duration", d))
			reqs = left
			continue
		default:
			// Unknown outcome (the catalog may have accepted it): the next attempt reloads the
			// table, and a request whose position is already there is answered as committed.
			c.observe("error", d)
			c.log.Warn("iceberg commit failed, retrying", zap.Error(err), zap.Int("shards", len(left)), zap.Duration("duration", d))
			reqs = left
			if ctx.Err() != nil && !final {
				c.requeue(reqs)
				return
			}
			sleep := backoff/2 + rand.N(backoff/2+1)
			backoff = min(backoff*2, 5*time.Second)
			select {
			case <-time.After(sleep):
			case <-ctx.Done():
				if !final {
					c.requeue(reqs)
					return
				}
			}
		}
	}
}

func (c *Committer) requeue(reqs []*Request) {
	c.mu.Lock()
	c.pending = append(reqs, c.pending...)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Committer) observe(outcome string, d time.Duration) {
	if c.Observe != nil {
		c.Observe(outcome, d)
	}
}

// live drops the requests whose writer gave up (context ended): they are never committed.
func live(reqs []*Request) []*Request {
	out := reqs[:0]
	for _, r := range reqs {
		if r.ctx.Err() != nil {
			r.done <- r.ctx.Err()
			continue
		}
		out = append(out, r)
	}
	return out
}

// commitOnce answers the requests the table already holds (a commit whose answer was lost) or
// refuses them (position moved), and commits the rest in one snapshot. It starts from the
// table as this committer's last commit left it when every request follows on from it, and
// loads the table otherwise (a refusal or an "already there" is only ever decided on a table
// just loaded: the kept one may be behind another writer's commits). It returns the requests
// still to answer when the commit failed.
func (c *Committer) commitOnce(ctx context.Context, reqs []*Request) ([]*Request, error) {
	cur := c.last
	c.last = nil // kept again only if this commit lands
	if cur == nil || !followOn(cur.pos, reqs) {
		tbl, err := c.cat.LoadTable(ctx, c.ident)
		if err != nil {
			return reqs, fmt.Errorf("load iceberg table: %w", err)
		}
		pos, err := Positions(tbl.Metadata())
		if err != nil {
			return reqs, err
		}
		cur = &loaded{tbl: tbl, pos: pos}
	}
	pos := maps.Clone(cur.pos)
	var include []*Request
	props := iceberg.Properties{}
	var files []string
	for _, r := range reqs {
		at := pos[r.Shard]
		switch {
		case at == r.Last:
			r.done <- nil // already committed (by this writer, whose answer was lost)
		case at == r.Prev:
			include = append(include, r)
			pos[r.Shard] = r.Last // a second request of the same shard follows this one
			props[PositionKey(r.Shard.Stream, r.Shard.Shard)] = r.Last.String()
			files = append(files, r.Files...)
		default:
			r.done <- fmt.Errorf("%w: %s/%s: table at %s, this flush follows %s", ErrPositionMoved, r.Shard.Stream, r.Shard.Shard, at, r.Prev)
		}
	}
	if len(include) == 0 {
		return nil, nil
	}
	sort.Strings(files)
	txn := cur.tbl.NewTransaction()
	if err := txn.AssertRefSnapshotID(table.MainBranch); err != nil {
		return include, fmt.Errorf("iceberg commit: assert snapshot: %w", err)
	}
	// ignoreDuplicates: the positions above already prove no file is in the table twice, and
	// the library's own check would read every manifest on every commit.
	if err := txn.AddFiles(ctx, files, props, true); err != nil {
		return include, fmt.Errorf("iceberg commit: add %d files: %w", len(files), err)
	}
	next, err := txn.Commit(ctx)
	if err != nil {
		return include, err
	}
	c.last = &loaded{tbl: next, pos: pos}
	for _, r := range include {
		r.done <- nil
	}
	c.log.Info("iceberg commit", zap.Int("shards", len(include)), zap.Int("files", len(files)))
	return nil, nil
}

// followOn reports whether every request follows on from pos (each shard's requests in order),
// so a table known at pos needs no reload to decide them.
func followOn(pos map[ShardKey]Position, reqs []*Request) bool {
	next := map[ShardKey]Position{}
	for _, r := range reqs {
		at, ok := next[r.Shard]
		if !ok {
			at = pos[r.Shard]
		}
		if at != r.Prev {
			return false
		}
		next[r.Shard] = r.Last
	}
	return true
}

// PutData writes one data file at location (under DataPath), bounded by ctx.
func (c *Committer) PutData(ctx context.Context, location string, body []byte) error {
	if !strings.HasPrefix(location, c.location+"/data/") {
		return fmt.Errorf("iceberg data file %q is outside the table's data/", location)
	}
	return putLocation(ctx, location, body)
}

// isConflict reports whether a commit failed because another writer committed first: the
// catalog refused it before writing anything, so it is retried at once against the new
// snapshot. A REST catalog answers 409 (ErrCommitFailed); the SQL catalog checks the
// requirement (AssertRefSnapshotID) itself and returns its plain "requirement failed" error.
func isConflict(err error) bool {
	return errors.Is(err, table.ErrCommitFailed) || strings.Contains(err.Error(), "requirement failed:")
}
