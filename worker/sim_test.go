package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/sirupsen/logrus"
	"go.uber.org/zap"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/leasesim"
	"github.com/recstream/recstream/internal/objstore"
)

// The lease simulation: N real workers (worker.Worker, the KCL library, checkpoint.Store) in
// one process against an in-memory DynamoDB table that bills capacity units as DynamoDB
// on-demand does and an in-memory Kinesis stream with synthetic records, under
// testing/synctest's virtual clock (time only moves when every goroutine waits, so a
// simulated minute costs the CPU its work needs, not a minute). See docs/benchmarks.md.

// simFleet is one simulated deployment.
type simFleet struct {
	t      testing.TB
	cfg    Config
	table  *leasesim.Table
	stream *leasesim.Stream
	log    *zap.Logger

	mu      sync.Mutex
	members []*simMember
	nextID  int
	// lastRead: per shard, when a GetRecords answer last reached a live worker; silence is
	// the longest gap seen since watchSilence.
	lastRead   map[string]time.Time
	silence    time.Duration
	silentID   string
	watching   bool
	deliveries map[string]int // sequence number -> times delivered to a processor
	redelivery int
	puts       map[string]int // object key -> completed Puts
	rewrites   int
}

type simMember struct {
	id     string
	link   *leasesim.Link
	w      *Worker
	cancel context.CancelFunc
	done   chan error
	killed bool
}

const simTable = "recstream-sim"

func newSimFleet(t testing.TB, shards int) *simFleet {
	cfg := DefaultConfig()
	cfg.StatusInterval = 0
	cfg.Format = "jsonl"
	// 1 s flush windows (the low-latency profile): one checkpoint per busy shard and second,
	// the most lease-table writes, as in the figures of docs/benchmarks.md.
	cfg.Flush.MaxAge = time.Second
	cfg.LeaderAssigned = os.Getenv("RECSTREAM_LEASE_SIM_LEADER") != "0"
	f := &simFleet{t: t, cfg: cfg, table: leasesim.NewTable(simTable, checkpoint.AttrShardID), stream: leasesim.NewStream("sim", shards),
		log: zap.NewNop(), lastRead: map[string]time.Time{}, deliveries: map[string]int{}, puts: map[string]int{}}
	if p := os.Getenv("RECSTREAM_LEASE_SIM_LOG"); p != "" {
		zc := zap.NewDevelopmentConfig()
		zc.OutputPaths = []string{p}
		zc.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
		if l, err := zc.Build(); err == nil {
			f.log = l
		}
	}
	f.stream.OnRead(f.onRead)
	f.stream.SetReadLatency(100 * time.Millisecond)
	return f
}

func (f *simFleet) onRead(reader, shardID string, recs []ktypes.Record) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if last, ok := f.lastRead[shardID]; ok && f.watching && now.Sub(last) > f.silence {
		f.silence, f.silentID = now.Sub(last), shardID
		f.log.Info("sim: longest silence so far", zap.String("shard_id", shardID), zap.String("reader", reader),
			zap.Time("from", last), zap.Duration("silence", now.Sub(last)))
	}
	f.lastRead[shardID] = now
	for _, r := range recs {
		seq := *r.SequenceNumber
		f.deliveries[seq]++
		if f.deliveries[seq] > 1 {
			f.redelivery++
		}
	}
}

// watchSilence restarts the silence measurement: from now on, every shard read before.
func (f *simFleet) watchSilence() {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range f.lastRead {
		f.lastRead[id] = now
	}
	f.silence, f.silentID, f.watching = 0, "", true
}

// simSink is the discarding object store: it counts Puts per key (a key written twice is a
// window replayed) and refuses writes of a killed member.
type simSink struct {
	f    *simFleet
	link *leasesim.Link
	cut  func() bool
}

func (s simSink) Put(ctx context.Context, key string, body io.Reader) error {
	if s.cut() {
		return errors.New("sim: process killed")
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		return err
	}
	s.f.mu.Lock()
	s.f.puts[key]++
	if s.f.puts[key] > 1 {
		s.f.rewrites++
	}
	s.f.mu.Unlock()
	return nil
}
func (s simSink) Get(context.Context, string) (io.ReadCloser, error) {
	return nil, objstore.ErrNotExist
}
func (s simSink) List(context.Context, string) ([]objstore.Object, error) { return nil, nil }
func (s simSink) Delete(context.Context, string) error                    { return nil }
func (s simSink) URL(key string) string                                   { return "sim://" + key }

// start adds and starts one worker.
func (f *simFleet) start() *simMember {
	f.mu.Lock()
	id := fmt.Sprintf("w%03d", f.nextID)
	f.nextID++
	f.mu.Unlock()
	m := &simMember{id: id, link: &leasesim.Link{}, done: make(chan error, 1)}
	killed := func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return m.killed
	}
	cfg := f.cfg
	cfg.WorkerID = id
	log := f.log.With(zap.String("sim_worker", id))
	store, err := checkpoint.New(checkpoint.Config{Table: simTable, WorkerID: id, FailoverTime: cfg.FailoverTime, Logger: log, ClaimIndex: cfg.LeaderAssigned},
		f.table.Client(m.link))
	if err != nil {
		f.t.Fatal(err)
	}
	stream := Stream{Kinesis: awsenv.KinesisConfig{Stream: "sim", Region: "us-east-1", Shards: 1},
		DynamoDB: awsenv.DynamoDBConfig{LeaseTable: simTable, Region: "us-east-1"}}
	m.w, err = New(cfg, stream, Deps{Store: simSink{f: f, link: m.link, cut: killed}, Recommender: fakeRecommender{}, K: 5, Log: log,
		IsLeaseLost: isLeaseLost}, f.stream.Client(id, m.link, time.Now), store)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { m.done <- m.w.Run(ctx) }()
	f.mu.Lock()
	f.members = append(f.members, m)
	f.mu.Unlock()
	return m
}

// kill stops m hard: every call of its clients fails from now on (nothing released, its
// leases' counters freeze), as after kill -9.
func (f *simFleet) kill(m *simMember) {
	f.mu.Lock()
	m.killed = true
	f.mu.Unlock()
	m.link.Cut(true)
}

// stop stops m gracefully (SIGTERM) and waits for Run to return.
func (f *simFleet) stop(m *simMember) {
	m.cancel()
	<-m.done
	f.mu.Lock()
	for i, x := range f.members {
		if x == m {
			f.members = append(f.members[:i], f.members[i+1:]...)
			break
		}
	}
	f.mu.Unlock()
}

func (f *simFleet) stopAll() {
	f.mu.Lock()
	ms := append([]*simMember(nil), f.members...)
	f.mu.Unlock()
	for _, m := range ms {
		m.cancel()
	}
	for _, m := range ms {
		<-m.done
	}
}

// held returns, per live member, the shards it processes.
func (f *simFleet) held() map[string][]string {
	f.mu.Lock()
	ms := append([]*simMember(nil), f.members...)
	f.mu.Unlock()
	out := map[string][]string{}
	for _, m := range ms {
		if m.killed {
			continue
		}
		s := m.w.running.Load()
		if s == nil {
			out[m.id] = nil
			continue
		}
		for _, r := range s.snapshot() {
			out[m.id] = append(out[m.id], r.shard)
		}
	}
	return out
}

// coverage returns how many open shards a live member processes, and the most one holds.
func (f *simFleet) coverage() (covered, maxHeld int) {
	open := map[string]bool{}
	for _, id := range f.stream.OpenShards() {
		open[id] = true
	}
	seen := map[string]bool{}
	for _, ids := range f.held() {
		n := 0
		for _, id := range ids {
			if open[id] {
				n++
				seen[id] = true
			}
		}
		maxHeld = max(maxHeld, n)
	}
	return len(seen), maxHeld
}

// logUncovered logs, for a failover that did not complete, the rows of up to five open shards
// no live member processes, and which members were killed.
func (f *simFleet) logUncovered(t *testing.T, victims []*simMember) {
	covered := map[string]bool{}
	for _, ids := range f.held() {
		for _, id := range ids {
			covered[id] = true
		}
	}
	var killed []string
	for _, m := range victims {
		killed = append(killed, m.id)
	}
	rows := map[string]string{}
	for _, it := range f.table.Items() {
		var id string
		if v, ok := it[checkpoint.AttrShardID].(*types.AttributeValueMemberS); ok {
			id = v.Value
		}
		var fields []string
		for _, k := range []string{checkpoint.AttrOwner, checkpoint.AttrCounter, checkpoint.AttrClaim, checkpoint.AttrCheckpoint} {
			if v, ok := it[k]; ok {
				switch x := v.(type) {
				case *types.AttributeValueMemberS:
					fields = append(fields, k+"="+x.Value)
				case *types.AttributeValueMemberN:
					fields = append(fields, k+"="+x.Value)
				}
			}
		}
		rows[id] = strings.Join(fields, " ")
	}
	t.Logf("failover incomplete: killed %v; leader row: %s", killed, rows[checkpoint.LeaderRow])
	n := 0
	for _, id := range f.stream.OpenShards() {
		if !covered[id] && n < 5 {
			n++
			t.Logf("  uncovered %s: %s", id, rows[id])
		}
	}
}

// waitCovered waits until every open shard is processed by a live member, checking every
// 100 ms of virtual time, and returns how long that took; ok false at the deadline.
func (f *simFleet) waitCovered(deadline time.Duration) (time.Duration, bool) {
	start := time.Now()
	n := len(f.stream.OpenShards())
	for {
		if c, _ := f.coverage(); c == n {
			return time.Since(start), true
		}
		if time.Since(start) > deadline {
			return time.Since(start), false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// produce puts perSecond records on every open shard each second until ctx ends.
func (f *simFleet) produce(ctx context.Context, perSecond int) {
	i := 0
	t := time.NewTicker(time.Second / time.Duration(perSecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range f.stream.OpenShards() {
			i++
			if _, err := f.stream.Put(id, strconv.Itoa(i), event(i, "sim"), time.Now()); err != nil {
				f.t.Errorf("put: %v", err)
				return
			}
		}
	}
}

// simResult is one row of the simulation table.
type simResult struct {
	Shards, Workers int
	Window          time.Duration // steady-state window the usage is measured over
	Usage           leasesim.Usage
	AllLeased       time.Duration
	MaxHeld         int
	Failover        time.Duration // kill -9 of 10 % of the workers -> their shards processed again
	FailoverOK      bool
	Rolling         bool          // a rolling restart was run
	Restarted       int           // workers restarted one by one
	Silence         time.Duration // longest gap between two reads of a shard during the rolling restart
	SilentShard     string
	Reread          int // records delivered again during the rolling restart
	Rewritten       int // objects written again during the rolling restart
}

func (r simResult) perMinute() (rcu, wcu float64) {
	m := r.Window.Minutes()
	return r.Usage.RCU / m, r.Usage.WCU / m
}

// simOptions chooses the phases of one run.
type simOptions struct {
	window  time.Duration // steady-state measurement
	failure bool          // kill -9 10 % of the workers
	rolling int           // restart this many workers one by one (0: none)
	// rollingGap is the pause between two restarts (the time ECS waits for the new task).
	rollingGap time.Duration
}

// runSim runs one simulated deployment in a synctest bubble and returns its figures.
func runSim(t *testing.T, shards, workers int, o simOptions) simResult {
	res := simResult{Shards: shards, Workers: workers, Window: o.window}
	synctest.Test(t, func(t *testing.T) {
		f := newSimFleet(t, shards)
		f.table.Create() // as `recstream migrate` or the first worker would
		ctx, stopProducing := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { f.produce(ctx, 1); close(done) }()
		for range workers {
			f.start()
		}
		var ok bool
		res.AllLeased, ok = f.waitCovered(10 * time.Minute)
		if !ok {
			t.Errorf("%dx%d: not all shards leased after %s", shards, workers, res.AllLeased)
		}
		// Let the fleet settle (the fair-share rebalancing by claims), then measure.
		time.Sleep(30 * time.Second)
		_, res.MaxHeld = f.coverage()
		before := f.table.Usage()
		time.Sleep(o.window)
		res.Usage = f.table.Usage().Sub(before)

		if o.failure {
			f.mu.Lock()
			victims := append([]*simMember(nil), f.members[:max(1, workers/10)]...)
			f.mu.Unlock()
			for _, m := range victims {
				f.kill(m)
			}
			res.Failover, res.FailoverOK = f.waitCovered(5 * time.Minute)
			if !res.FailoverOK {
				f.logUncovered(t, victims)
			}
			for _, m := range victims {
				f.stop(m)
			}
			for range victims {
				f.start()
			}
			time.Sleep(30 * time.Second)
		}
		if o.rolling > 0 {
			res.Rolling = true
			f.mu.Lock()
			f.redelivery, f.rewrites = 0, 0
			f.mu.Unlock()
			f.watchSilence()
			for i := 0; i < o.rolling; i++ {
				f.mu.Lock()
				m := f.members[0]
				f.mu.Unlock()
				f.stop(m)
				f.start()
				time.Sleep(o.rollingGap)
				res.Restarted++
			}
			f.mu.Lock()
			res.Silence, res.SilentShard, res.Reread, res.Rewritten = f.silence, f.silentID, f.redelivery, f.rewrites
			f.watching = false
			f.mu.Unlock()
		}
		stopProducing()
		<-done
		f.stopAll()
	})
	return res
}

func simTableHeader() string {
	return "| shards | workers | RCU/min | WCU/min | $/hour | requests/min | all leased | max leases/worker | failover (kill 10 %) | rolling restart: longest silence | re-read | objects rewritten |\n" +
		"|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
}

func (r simResult) row() string {
	rcu, wcu := r.perMinute()
	fo := "-"
	if r.Failover > 0 {
		fo = r.Failover.Round(100 * time.Millisecond).String()
		if !r.FailoverOK {
			fo = "> " + fo
		}
	}
	roll := "- | - | -"
	if r.Rolling {
		roll = fmt.Sprintf("%s (%d restarts) | %d | %d", r.Silence.Round(10*time.Millisecond), r.Restarted, r.Reread, r.Rewritten)
	}
	return fmt.Sprintf("| %d | %d | %.0f | %.0f | %.3f | %.0f | %s | %d | %s | %s |", r.Shards, r.Workers, rcu, wcu,
		r.Usage.DollarsPerHour(r.Window.Minutes()), float64(r.Usage.TotalRequests())/r.Window.Minutes(),
		r.AllLeased.Round(100*time.Millisecond), r.MaxHeld, fo, roll)
}

// simQuiet silences the KCL library's own logrus output for the simulation (the killed
// workers' failed calls would flood the test log).
func simQuiet(t *testing.T) {
	logrus.SetOutput(io.Discard)
	t.Cleanup(func() { logrus.SetOutput(os.Stderr) })
}
