package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go/middleware"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// partitionCut cuts a client off from its service, like a killed or partitioned process: no
// call of a cut client reaches the server.
type partitionCut struct{ on atomic.Bool }

func (c *partitionCut) option(cfg *aws.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("partition",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				if c.on.Load() {
					return middleware.InitializeOutput{}, middleware.Metadata{}, fmt.Errorf("test: partitioned")
				}
				return next.HandleInitialize(ctx, in)
			}), middleware.Before)
	})
}

// member is an in-process worker whose Kinesis, DynamoDB and S3 clients can be cut at once:
// kill stops it hard (nothing released, nothing written, its leases' counters freeze).
type member struct {
	id      string
	w       *Worker
	r       *running
	cut     *partitionCut
	metrics *checkpoint.Metrics
}

func (m *member) kill() { m.cut.on.Store(true) }

// leases reports the shards this worker is processing (its live processors).
func (m *member) shards() []shardReport {
	s := m.w.running.Load()
	if s == nil {
		return nil
	}
	return s.snapshot()
}

func (e *testEnv) startMember(t testing.TB, id string, log *zap.Logger, order *writeOrder, dbOpts ...awsenv.Option) *member {
	t.Helper()
	ctx := context.Background()
	m := &member{id: id, cut: &partitionCut{}}
	kc, err := awsenv.Kinesis(ctx, e.Kinesis, m.cut.option)
	if err != nil {
		t.Fatal(err)
	}
	db, err := awsenv.DynamoDB(ctx, e.DynamoDB, append([]awsenv.Option{m.cut.option}, dbOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	s3c, err := awsenv.S3(ctx, e.S3, m.cut.option)
	if err != nil {
		t.Fatal(err)
	}
	out, err := objstore.Open(e.Location, s3c)
	if err != nil {
		t.Fatal(err)
	}
	if order != nil {
		out = order.wrap(out, e.Cfg.Format)
	}
	m.metrics, _ = checkpoint.NewMetrics(nil)
	cfg := e.Cfg
	cfg.WorkerID = id
	store, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: id, FailoverTime: cfg.FailoverTime,
		Logger: log, Metrics: m.metrics}, db)
	if err != nil {
		t.Fatal(err)
	}
	m.w, err = New(cfg, Stream{Kinesis: e.Kinesis, DynamoDB: e.DynamoDB}, Deps{Store: out, Recommender: fakeRecommender{}, K: 5, Log: log,
		IsLeaseLost: func(err error) bool { return isLeaseLost(err) }}, kc, store)
	if err != nil {
		t.Fatal(err)
	}
	m.r = start(m.w)
	t.Cleanup(func() {
		m.r.cancel()
		select {
		case <-m.r.done:
		case <-time.After(time.Minute):
			t.Errorf("worker %s did not stop", id)
		}
	})
	return m
}

func isLeaseLost(err error) bool { return errors.Is(err, checkpoint.ErrLeaseLost) }

// writeOrder notes, for every output record, the order in which it was first made durable:
// the position of the first completed Put of an object holding it.
type writeOrder struct {
	mu    sync.Mutex
	n     int
	first map[string]int // session id -> position of its first completed Put
}

type orderStore struct {
	objstore.Store
	o      *writeOrder
	format string
}

func (o *writeOrder) wrap(s objstore.Store, format string) objstore.Store {
	return orderStore{Store: s, o: o, format: format}
}

func (s orderStore) Put(ctx context.Context, key string, body io.Reader) error {
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	if err := s.Store.Put(ctx, key, strings.NewReader(string(b))); err != nil {
		return err
	}
	if strings.HasPrefix(key, ErrorsPrefix+"/") {
		return nil
	}
	recs, err := DecodeObject(s.format, b)
	if err != nil {
		return fmt.Errorf("test: decode %s: %w", key, err)
	}
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.o.n++
	for _, r := range recs {
		if _, ok := s.o.first[r.SessionID]; !ok {
			s.o.first[r.SessionID] = s.o.n
		}
	}
	return nil
}

// check verifies that the records of every key were first written in the order they were
// produced (index order within a key; keyOf gives a record index's key).
func (o *writeOrder) check(run string, n int, keyOf func(i int) string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	last := map[string]int{}
	lastIdx := map[string]int{}
	for i := range n {
		k := keyOf(i)
		pos, ok := o.first[fmt.Sprintf("%s-%06d", run, i)]
		if !ok {
			return fmt.Errorf("record %d never written", i)
		}
		if pos < last[k] {
			return fmt.Errorf("key %s: record %d first written at put #%d, before record %d (put #%d)", k, i, pos, lastIdx[k], last[k])
		}
		last[k], lastIdx[k] = pos, i
	}
	return nil
}

// traffic puts records of run at a steady pace until stopped; each tick, perTick(i) gives
// the next record's partition key and explicit hash key (nil: none).
type traffic struct {
	next atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func (e *testEnv) startTraffic(t testing.TB, run string, every time.Duration, perTick int, key func(i int) (string, *string)) *traffic {
	t.Helper()
	tr := &traffic{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			in := &kinesis.PutRecordsInput{StreamName: aws.String(e.Stream)}
			base := int(tr.next.Load())
			for i := base; i < base+perTick; i++ {
				pk, hash := key(i)
				in.Records = append(in.Records, ktypes.PutRecordsRequestEntry{Data: event(i, run), PartitionKey: aws.String(pk), ExplicitHashKey: hash})
			}
			out, err := e.kc.PutRecords(context.Background(), in)
			if err != nil || aws.ToInt32(out.FailedRecordCount) > 0 {
				// Retry the same records next tick (order is kept: nothing of this call was
				// written, or the failed ones are retried with their successors).
				if err == nil {
					t.Errorf("put records: %d failed", aws.ToInt32(out.FailedRecordCount))
					return
				}
				continue
			}
			tr.next.Store(int64(base + perTick))
		}
	}()
	return tr
}

// halt stops the traffic and returns how many records were put.
func (tr *traffic) halt() int {
	close(tr.stop)
	<-tr.done
	return int(tr.next.Load())
}

// shardHashKeys returns, for each open shard, a hash key inside its range, sorted by shard id.
func (e *testEnv) shardHashKeys(t testing.TB) (ids []string, keys []string) {
	t.Helper()
	var in = &kinesis.ListShardsInput{StreamName: aws.String(e.Stream)}
	for {
		out, err := e.kc.ListShards(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range out.Shards {
			if s.SequenceNumberRange.EndingSequenceNumber == nil {
				ids = append(ids, aws.ToString(s.ShardId))
				keys = append(keys, aws.ToString(s.HashKeyRange.StartingHashKey))
			}
		}
		if out.NextToken == nil {
			break
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
	return ids, keys
}

// owners counts the leases per owner in the table ("" = free).
func (e *testEnv) owners(t testing.TB, observer *checkpoint.Store) (map[string]int, []checkpoint.Lease) {
	t.Helper()
	ls, err := observer.ListLeases(context.Background())
	if err != nil {
		t.Logf("list leases: %v", err)
		return nil, nil
	}
	m := map[string]int{}
	for _, l := range ls {
		if !l.Closed() {
			m[l.Owner]++
		}
	}
	return m, ls
}

// TestLeasesAtScale: 64 shards, 4 workers started together under steady traffic. All shards
// are leased within 30 s. A worker takes no lease beyond its fair share ceil(open/live) as its
// lease view shows the fleet (checkpoint.Leasing); a worker that took more before it saw the
// others (a staggered start) gives the excess away by lease stealing (polite hand-overs, each
// answering a claim; none when nobody exceeded the share), so the fleet settles at exactly
// ceil(64/4) = 16 each and claims no more. One worker is then killed hard (its clients cut: nothing released): every one of its
// shards is processed again by a survivor within failover_time + 10 s, whatever their number,
// each taken over by expiry, no survivor holding more than ceil(64/3) = 22, and every record
// is written exactly once.
func TestLeasesAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test needs the local stack (not with -short)")
	}
	const shards, workers = 64, 4
	e := newTestEnv(t, shards)
	e.Cfg.FailoverTime = 6 * time.Second
	e.Cfg.LeaseSafetyMargin = 2 * time.Second
	e.Cfg.IdleTimeBetweenReads = 500 * time.Millisecond
	e.Cfg.Flush = FlushConfig{MaxRecords: 1000, MaxBytes: 1 << 20, MaxAge: 5 * time.Second, WindowGrace: 500 * time.Millisecond}
	log := testLogger(t)
	ids, hashes := e.shardHashKeys(t)
	if len(ids) != shards {
		t.Fatalf("%d open shards, want %d", len(ids), shards)
	}
	// One record per shard and second, on every shard.
	tr := e.startTraffic(t, "s", time.Second, shards, func(i int) (string, *string) {
		return fmt.Sprint(i), aws.String(hashes[i%shards])
	})
	observer := leaseStore(t, e.db, e.DynamoDB.LeaseTable, "observer", e.Cfg.FailoverTime, nil)

	began := time.Now()
	ms := make([]*member, workers)
	for i := range ms {
		ms[i] = e.startMember(t, fmt.Sprintf("s%d", i), log, nil)
	}
	// held counts the leases of each of ms in the table, and their max and min.
	held := func(ms []*member) (n map[string]int, mx, mn, total int) {
		all, _ := e.owners(t, observer)
		n = map[string]int{}
		mn = shards
		for _, m := range ms {
			n[m.id] = all[m.id]
			mx, mn, total = max(mx, all[m.id]), min(mn, all[m.id]), total+all[m.id]
		}
		return n, mx, mn, total
	}
	handovers := func(ms []*member, reason string) (n int) {
		for _, m := range ms {
			n += int(testutil.ToFloat64(m.metrics.Handovers.WithLabelValues(reason)))
		}
		return n
	}
	claims := func(ms []*member) (n int) {
		for _, m := range ms {
			n += int(testutil.ToFloat64(m.metrics.Claims))
		}
		return n
	}
	var atStart map[string]int
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		n, _, _, total := held(ms)
		atStart = n
		return total == shards
	}, "not all %d shards leased by the 4 workers", shards)
	t.Logf("all %d shards leased %s after start: %v", shards, time.Since(began).Round(10*time.Millisecond), atStart)

	// The fair share: nobody ends up above ceil(N/W) (nor, N/W being whole, below it). What a
	// worker took beyond it before it saw the others is the excess lease stealing moves.
	share := (shards + workers - 1) / workers
	excess := 0
	for _, c := range atStart {
		excess += max(0, c-share)
	}
	if excess == 0 {
		if c := claims(ms); c != 0 {
			t.Fatalf("every worker took at most its share %d (%v), yet %d claims were written", share, atStart, c)
		}
	}
	// Rebalancing moves one excess lease per hand-over and needs at most one claim per steal
	// interval per worker, a hand-over taking a renewal period plus a pass.
	settleBy := 2*e.Cfg.LeaseStealingInterval + time.Duration(excess)*(e.Cfg.LeaseStealingInterval+e.Cfg.FailoverTime)
	stacktest.Eventually(t, settleBy, 200*time.Millisecond, func() bool {
		n, mx, mn, total := held(ms)
		if mx > max(share, maxOf(atStart)) {
			t.Fatalf("a worker grew to %d leases, above its share %d and the start's %v: %v", mx, share, atStart, n)
		}
		return total == shards && mx == share && mn == share
	}, "the fleet did not settle at %d leases each from %v", share, atStart)
	// Settled: no further claim within two steal intervals, and nothing expired (every worker
	// is alive).
	claimsSettled := claims(ms)
	quiet := time.Now().Add(2 * e.Cfg.LeaseStealingInterval)
	stacktest.Eventually(t, 3*e.Cfg.LeaseStealingInterval, 200*time.Millisecond, func() bool {
		if n, mx, mn, _ := held(ms); mx != share || mn != share {
			t.Fatalf("the settled fleet moved: %v, want %d each", n, share)
		}
		return time.Now().After(quiet)
	}, "")
	if c := claims(ms); c != claimsSettled {
		t.Fatalf("%d claims written after the fleet settled at %d each (%d before)", c-claimsSettled, share, claimsSettled)
	}
	// Each excess lease left its worker by a hand-over, each hand-over answered a claim. (Not
	// exactly one per excess lease: two workers below the share may claim from the same busiest
	// one at once, which then claims one back.)
	if h := handovers(ms, "claim"); h < excess || h > claimsSettled {
		t.Fatalf("%d hand-overs by claim, want at least the %d leases taken beyond the share %d at the start (%v) and at most the %d claims written",
			h, excess, share, atStart, claimsSettled)
	}
	if h := handovers(ms, "expired"); h != 0 {
		t.Fatalf("%d leases taken over by expiry while every worker was alive", h)
	}
	t.Logf("start: %v, excess over the share %d: %d, hand-overs by claim: %d, claims written: %d", atStart, share, excess, handovers(ms, "claim"), claimsSettled)

	// Kill one worker (they hold the same number now).
	victim := ms[0]
	_, ls := e.owners(t, observer)
	orphans := map[string]string{} // shard -> checkpoint at the kill
	for _, l := range ls {
		if l.Owner == victim.id {
			orphans[l.ShardID] = l.Checkpoint
		}
	}
	victim.kill()
	killed := time.Now()
	survivors := []*member{}
	for _, m := range ms {
		if m != victim {
			survivors = append(survivors, m)
		}
	}
	// Processed again: a survivor's processor for the shard has taken records after the kill
	// (it buffers them, or has checkpointed past the victim's checkpoint).
	resumed := map[string]time.Duration{}
	survivorShare := (shards + workers - 2) / (workers - 1)
	stacktest.Eventually(t, e.Cfg.FailoverTime+10*time.Second, 100*time.Millisecond, func() bool {
		if n, mx, _, _ := held(survivors); mx > survivorShare {
			t.Fatalf("a survivor holds %d leases, more than ceil(%d/%d) = %d: %v", mx, shards, workers-1, survivorShare, n)
		}
		for _, m := range survivors {
			for _, r := range m.shards() {
				if cp, ok := orphans[r.shard]; ok && (r.buffered > 0 || r.checkpoint != cp) {
					if _, done := resumed[r.shard]; !done {
						resumed[r.shard] = time.Since(killed)
					}
				}
			}
		}
		return len(resumed) == len(orphans)
	}, "the killed worker's %d shards were not all processed again by survivors (%d were)", len(orphans), len(resumed))
	var worst time.Duration
	for _, d := range resumed {
		worst = max(worst, d)
	}
	// The survivors' share is ceil(N/(W-1)): none took more, and every orphan was taken by
	// expiry, once (a hand-over by claim moves leases among survivors, not orphans).
	if n, mx, _, _ := held(survivors); mx > survivorShare {
		t.Fatalf("a survivor holds %d leases, more than ceil(%d/%d) = %d: %v", mx, shards, workers-1, survivorShare, n)
	}
	if h := handovers(survivors, "expired"); h != len(orphans) {
		t.Fatalf("%d leases taken over by expiry after the kill, want the victim's %d", h, len(orphans))
	}
	t.Logf("killed %s holding %d shards; all processed again by survivors within %s (failover_time %s)",
		victim.id, len(orphans), worst.Round(10*time.Millisecond), e.Cfg.FailoverTime)

	total := tr.halt()
	e.waitExactlyOnce(t, "s", total, 120*time.Second)
	for _, m := range survivors {
		m.r.cancel()
	}
}

func maxOf(m map[string]int) (mx int) {
	for _, v := range m {
		mx = max(mx, v)
	}
	return mx
}
