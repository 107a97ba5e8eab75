package worker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/icetable"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// The benchmarks (b)-(d) take minutes on the local stack and are not part of the
// normal test run:
//
//	RECSTREAM_WORKER_BENCH=1 go test -run '^$' -bench 'EndToEnd|Latency|PeakRSS' -benchtime 1x ./worker/
//
// Each runs its scenario once per b.N iteration (use -benchtime 1x) and reports its figures
// as custom metrics.
const benchEnv = "RECSTREAM_WORKER_BENCH"

func requireBench(b *testing.B) {
	if os.Getenv(benchEnv) == "" {
		b.Skipf("issue benchmarks (b)-(d) need the local stack and minutes; set %s=1", benchEnv)
	}
}

// preload puts n events of run with 4 concurrent PutRecords streams (500 records per call,
// the Kinesis limit) and returns the put rate (events/s).
func (e *testEnv) preload(b *testing.B, run string, n int) float64 {
	return e.preloadAggregated(b, run, n, 0)
}

// preloadAggregated is preload with every agg events in one KPL aggregate (0: plain records).
func (e *testEnv) preloadAggregated(b *testing.B, run string, n, agg int) float64 {
	b.Helper()
	start := time.Now()
	var g errgroup.Group
	const per = 500
	next := atomic.Int64{}
	for range 4 {
		g.Go(func() error {
			for {
				lo := int(next.Add(per)) - per
				if lo >= n {
					return nil
				}
				in := &kinesis.PutRecordsInput{StreamName: aws.String(e.Stream)}
				for i := lo; i < min(lo+per, n); i++ {
					in.Records = append(in.Records, ktypes.PutRecordsRequestEntry{Data: event(i, run), PartitionKey: aws.String(strconv.Itoa(i))})
				}
				if agg > 0 {
					plain := in.Records
					in.Records = nil
					for j := 0; j < len(plain); j += agg {
						var data [][]byte
						for _, r := range plain[j:min(j+agg, len(plain))] {
							data = append(data, r.Data)
						}
						body, err := Aggregate(*plain[j].PartitionKey, data)
						if err != nil {
							return err
						}
						in.Records = append(in.Records, ktypes.PutRecordsRequestEntry{Data: body, PartitionKey: plain[j].PartitionKey})
					}
				}
				out, err := e.kc.PutRecords(context.Background(), in)
				if err != nil {
					return fmt.Errorf("put records: %w", err)
				}
				if c := aws.ToInt32(out.FailedRecordCount); c > 0 {
					return fmt.Errorf("put records: %d failed", c)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// counterSum adds up every series of the counter family name in reg.
func counterSum(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// firstCall notes when the recommender was first asked: the worker's first records.
type firstCall struct {
	fakeRecommender
	once sync.Once
	at   time.Time
}

func (f *firstCall) Recommend(ctx context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	f.once.Do(func() { f.at = time.Now() })
	return f.fakeRecommender.Recommend(ctx, users, anchors, k)
}

// benchWorker builds an in-process worker with its own metrics registry.
func (e *testEnv) benchWorker(b *testing.B, id string, rec Recommender) (*Worker, *prometheus.Registry) {
	b.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	cfg := e.Cfg
	cfg.WorkerID = id
	store, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: id, FailoverTime: cfg.FailoverTime}, e.db)
	if err != nil {
		b.Fatal(err)
	}
	w, err := New(cfg, Stream{Kinesis: e.Kinesis, DynamoDB: e.DynamoDB},
		Deps{Store: e.openStore(b), Recommender: rec, K: 5, Log: testLogger(b), Metrics: m,
			IsLeaseLost: func(err error) bool { return errors.Is(err, checkpoint.ErrLeaseLost) }}, e.kc, store)
	if err != nil {
		b.Fatal(err)
	}
	c, err := awsenv.S3(context.Background(), e.S3)
	if err != nil {
		b.Fatal(err)
	}
	if err := e.attachTable(w, c); err != nil {
		b.Fatal(err)
	}
	return w, reg
}

// BenchmarkEndToEnd is issue benchmark (b): a pre-loaded 4-shard stream drained through
// kinesalite by one worker (fake recommender, real S3 gateway and lease table). The rate is
// from the worker's first record to the last record written and checkpointed.
//
// kpl=100 is the same drain with every 100 events in one KPL aggregate (the KPL's default
// aggregating mode): de-aggregation by the record processor, sub-sequence numbers, flushes only
// at aggregate boundaries.
//
// table=iceberg is the kpl=0 drain with the output committed to an Iceberg table (SQL catalog
// on PostgreSQL, the shipped commit_interval unless RECSTREAM_E2E_COMMIT_INTERVAL says
// otherwise) instead of Hive objects: issue 20 asks for ≥ 0.9× hive (see BenchmarkIcebergVsHive).
func BenchmarkEndToEnd(b *testing.B) {
	requireBench(b)
	for _, agg := range []int{0, 100} {
		b.Run(fmt.Sprintf("kpl=%d", agg), func(b *testing.B) { benchEndToEnd(b, agg, false) })
	}
	b.Run("kpl=0/table=iceberg", func(b *testing.B) { benchEndToEnd(b, 0, true) })
}

func benchEndToEnd(b *testing.B, agg int, iceberg bool) {
	n := e2eEvents(40000)
	for range b.N {
		rate, putRate, e := drainEndToEnd(b, n, agg, iceberg)
		b.ReportMetric(rate, "events/s")
		b.ReportMetric(putRate, "put-events/s")
		if agg == 0 {
			b.ReportMetric(e.rawDrainRate(b, n), "raw-getrecords-events/s")
		}
	}
}

// e2eEvents is the drain's size: def, or RECSTREAM_E2E_EVENTS (a longer drain measures the
// steady state rather than start-up and the last flush).
func e2eEvents(def int) int {
	if v, err := strconv.Atoi(os.Getenv("RECSTREAM_E2E_EVENTS")); err == nil && v > 0 {
		return v
	}
	return def
}

// e2eCommitInterval is the table's commit_interval in the drains: the shipped one (5 s), or
// RECSTREAM_E2E_COMMIT_INTERVAL. The end of a drain does not wait for it (a caught-up shard
// hurries its commits); during the drain a shorter interval only adds commits.
func e2eCommitInterval(b *testing.B) time.Duration {
	if v := os.Getenv("RECSTREAM_E2E_COMMIT_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("RECSTREAM_E2E_COMMIT_INTERVAL: %v", err)
		}
		return d
	}
	return icetable.DefaultConfig().CommitInterval
}

// BenchmarkIcebergVsHive is the table=iceberg / kpl=0 comparison of BenchmarkEndToEnd made in
// pairs: each iteration drains a fresh stream with the Hive layout and another with the
// Iceberg table, in alternating order, and the ratio is taken within the pair. The machine's
// drift (other jobs, kinesalite's and PostgreSQL's share of two cores) moves both halves of a
// pair alike, where separate runs of the two sub-benchmarks minutes apart differ by 10-30 %.
// Reported: each system's mean rate, and the median and lowest ratio of the pairs.
// RECSTREAM_E2E_EVENTS sets the drain's size (default 200,000: five 10,000-record pages per
// shard).
func BenchmarkIcebergVsHive(b *testing.B) {
	requireBench(b)
	n := e2eEvents(200000)
	var ratios []float64
	var hiveSum, iceSum float64
	for i := range b.N {
		var hive, ice float64
		if i%2 == 0 {
			hive, _, _ = drainEndToEnd(b, n, 0, false)
			ice, _, _ = drainEndToEnd(b, n, 0, true)
		} else {
			ice, _, _ = drainEndToEnd(b, n, 0, true)
			hive, _, _ = drainEndToEnd(b, n, 0, false)
		}
		b.Logf("pair %d: hive %.0f events/s, iceberg %.0f events/s, ratio %.3f", i+1, hive, ice, ice/hive)
		hiveSum, iceSum = hiveSum+hive, iceSum+ice
		ratios = append(ratios, ice/hive)
	}
	slices.Sort(ratios)
	b.ReportMetric(hiveSum/float64(b.N), "hive-events/s")
	b.ReportMetric(iceSum/float64(b.N), "iceberg-events/s")
	b.ReportMetric(ratios[len(ratios)/2], "ratio-median")
	b.ReportMetric(ratios[0], "ratio-min")
}

// drainEndToEnd preloads a fresh 4-shard stream with n events (agg per KPL aggregate, 0: plain)
// and drains it with one worker writing the Hive layout or the Iceberg table. It returns the
// worker's rate (first record to last record checkpointed), the preload's put rate, and the env.
func drainEndToEnd(b *testing.B, n, agg int, iceberg bool) (rate, putRate float64, e *testEnv) {
	b.Helper()
	e = newTestEnv(b, 4)
	if iceberg {
		e.useIceberg(b)
		e.Cfg.Output.Iceberg.CommitInterval = e2eCommitInterval(b)
	}
	e.Cfg.MaxRecords = 10000
	e.Cfg.Flush = FlushConfig{MaxRecords: 10000, MaxBytes: 32 << 20, MaxAge: time.Second}
	// The library takes at most one new lease per shard sync: sync often so that the four
	// shards start within a second of each other.
	e.Cfg.ShardSyncInterval = 250 * time.Millisecond
	putRate = e.preloadAggregated(b, "e", n, agg)
	rec := &firstCall{}
	w, reg := e.benchWorker(b, "e2e", rec)
	r := start(w)
	stacktest.Eventually(b, 5*time.Minute, 20*time.Millisecond, func() bool {
		return counterSum(reg, "recstream_worker_records_out_total") >= float64(n)
	}, "worker did not write %d records", n)
	d := time.Since(rec.at)
	if err := r.stop(b); err != nil {
		b.Fatal(err)
	}
	if err := exactlyOnce(e.read(b), "e", n); err != nil {
		b.Fatal(err)
	}
	return float64(n) / d.Seconds(), putRate, e
}

// BenchmarkBacklogDefaults drains a pre-loaded 50,000-event, 4-shard backlog twice in one run:
// with the shipped configuration (DefaultConfig, which equals config.yaml, at 1 s windows) and with the tuned
// one (GetRecords 10,000, flush 10,000 records / 1 s, shard sync 250 ms). The rate is from
// the worker's start to the last record written and checkpointed, start-up included: what a
// user running the defaults gets. The ratio is shipped / tuned.
func BenchmarkBacklogDefaults(b *testing.B) {
	requireBench(b)
	const n = 50000
	drain := func(cfg Config) float64 {
		e := newTestEnv(b, 4)
		e.Cfg = cfg
		e.preload(b, "d", n)
		w, reg := e.benchWorker(b, "backlog", fakeRecommender{})
		t0 := time.Now()
		r := start(w)
		stacktest.Eventually(b, 5*time.Minute, 20*time.Millisecond, func() bool {
			return counterSum(reg, "recstream_worker_records_out_total") >= float64(n)
		}, "worker did not write %d records", n)
		d := time.Since(t0)
		if err := r.stop(b); err != nil {
			b.Fatal(err)
		}
		if err := exactlyOnce(e.read(b), "d", n); err != nil {
			b.Fatal(err)
		}
		return float64(n) / d.Seconds()
	}
	for range b.N {
		// Both at equal flush windows of 1 s (the low-latency profile): with the shipped 60 s
		// the tail of a fresh backlog waits for its window to end, which would measure the
		// window, not the drain.
		shipped := DefaultConfig()
		shipped.Flush.MaxAge = time.Second
		tuned := DefaultConfig()
		tuned.MaxRecords = 10000
		tuned.Flush.MaxRecords, tuned.Flush.MaxAge = 10000, time.Second
		tuned.ShardSyncInterval = 250 * time.Millisecond
		s, t := drain(shipped), drain(tuned)
		b.ReportMetric(s, "shipped-events/s")
		b.ReportMetric(t, "tuned-events/s")
		b.ReportMetric(s/t, "ratio")
	}
}

// rawDrainRate reads every shard from TRIM_HORIZON with bare GetRecords calls, concurrently
// and discarding the records: kinesalite's ceiling at this moment on this machine, to compare
// the worker's rate with.
func (e *testEnv) rawDrainRate(b *testing.B, want int) float64 {
	b.Helper()
	ctx := context.Background()
	shards, err := e.kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(e.Stream)})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	var got atomic.Int64
	var g errgroup.Group
	for _, sh := range shards.Shards {
		g.Go(func() error {
			it, err := e.kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(e.Stream),
				ShardId: sh.ShardId, ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon})
			if err != nil {
				return err
			}
			next := it.ShardIterator
			for next != nil {
				out, err := e.kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: next, Limit: aws.Int32(10000)})
				if err != nil {
					return err
				}
				got.Add(int64(len(out.Records)))
				if len(out.Records) == 0 {
					return nil // caught up (the stream is open: the iterator never ends)
				}
				next = out.NextShardIterator
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatalf("raw drain: %v", err)
	}
	if int(got.Load()) < want {
		b.Fatalf("raw drain read %d records, want %d", got.Load(), want)
	}
	return float64(got.Load()) / time.Since(start).Seconds()
}

// BenchmarkLatency is issue benchmark (c): events put one PutRecord at a time (20/s on 4
// shards) against a running worker with worker.flush.max_age 1s; each record's latency is
// from its PutRecord call to the first S3 List (polled every 100 ms) that shows its object.
//
// table=iceberg is the same with the output committed to an Iceberg table (commit_interval
// 1 s): a record is visible once a commit holding it is the table's current snapshot (polled
// through the catalog and the table's metadata, read by icespec).
func BenchmarkLatency(b *testing.B) {
	requireBench(b)
	b.Run("table=hive", func(b *testing.B) { benchLatency(b, false) })
	b.Run("table=iceberg", func(b *testing.B) { benchLatency(b, true) })
}

func benchLatency(b *testing.B, iceberg bool) {
	const n, every = 400, 50 * time.Millisecond
	for range b.N {
		e := newTestEnv(b, 4)
		// Production settings (10 s failover: the tests' 3 s loses leases on a loaded machine)
		// but for the 1 s flush age.
		e.Cfg = DefaultConfig()
		e.Cfg.ShardSyncInterval = time.Second
		e.Cfg.StatusInterval = 0
		e.Cfg.Flush.MaxAge = time.Second
		if iceberg {
			e.useIceberg(b)
			e.Cfg.Output.Iceberg.CommitInterval = time.Second
		}
		w, _ := e.benchWorker(b, "lat", fakeRecommender{})
		r := start(w)
		// Warm up: the worker holds all four leases and has written a record of each shard.
		warm := make([][]byte, 40)
		for i := range warm {
			warm[i] = event(i, "warm")
		}
		e.put(b, warm)
		stacktest.Eventually(b, 2*time.Minute, 250*time.Millisecond, func() bool {
			o := e.read(b)
			shards := map[string]bool{}
			for _, s := range o.shard {
				shards[s] = true
			}
			return len(o.count) == len(warm) && len(shards) == 4
		}, "warm-up records not written from all 4 shards")

		putAt, seenAt, _ := e.putAndWatch(b, "lat", n, every, time.Minute)
		if err := r.stop(b); err != nil {
			b.Fatal(err)
		}
		lat := make([]time.Duration, n)
		for i := range lat {
			lat[i] = seenAt[i].Sub(putAt[i])
		}
		slices.Sort(lat)
		q := func(p float64) time.Duration { return lat[min(n-1, int(p*float64(n)+0.5)-1)] }
		b.ReportMetric(q(0.50).Seconds(), "p50-s")
		b.ReportMetric(q(0.99).Seconds(), "p99-s")
		b.ReportMetric(lat[n-1].Seconds(), "max-s")
	}
}

// putAndWatch puts n events of run, one every every, and polls the output until each is
// visible (at most wait after the last put). It returns when each was put and first seen,
// and the output objects holding them (key → shard).
func (e *testEnv) putAndWatch(b *testing.B, run string, n int, every, wait time.Duration) (putAt, seenAt []time.Time, objects map[string]string) {
	b.Helper()
	ctx := context.Background()
	putAt, seenAt = make([]time.Time, n), make([]time.Time, n)
	objects = map[string]string{}
	var putErr error
	putDone := make(chan struct{})
	go func() {
		defer close(putDone)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := range n {
			<-tick.C
			putAt[i] = time.Now()
			if _, err := e.kc.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(e.Stream), Data: event(i, run),
				PartitionKey: aws.String(strconv.Itoa(i))}); err != nil {
				putErr = err
				return
			}
		}
	}()
	seenKeys := map[string]bool{}
	seen := 0
	deadline := time.Now().Add(time.Duration(n)*every + wait)
	for seen < n && time.Now().Before(deadline) {
		keys, now := e.visibleObjects(b)
		for _, key := range keys {
			if seenKeys[key] {
				continue
			}
			seenKeys[key] = true
			recs := e.readObject(b, key)
			for _, rec := range recs {
				var i int
				if _, err := fmt.Sscanf(rec.SessionID, run+"-%d", &i); err != nil || i < 0 || i >= n {
					continue
				}
				if !seenAt[i].IsZero() {
					b.Fatalf("record %s in two objects", rec.SessionID)
				}
				seenAt[i] = now
				objects[key] = rec.ShardID
				seen++
			}
		}
		time.Sleep(100 * time.Millisecond) // poll interval of the bounded wait above
	}
	<-putDone
	if putErr != nil {
		b.Fatal(putErr)
	}
	if seen != n {
		b.Fatalf("%d of %d records visible within the deadline", seen, n)
	}
	return putAt, seenAt, objects
}

// BenchmarkLabRateDefaults: the shipped flush settings (config.yaml, DefaultConfig) at the
// lab's rate, one event every 10 s on a 4-shard stream, for LAB_RATE_DURATION (default 10m):
// objects per shard and put→visible latency. It fails when a shard holds more objects than
// the run has flush windows could need at Firehose-like economy (10 for 10 minutes, i.e.
// <= 60 per shard-hour) or when p99 exceeds 65 s.
func BenchmarkLabRateDefaults(b *testing.B) {
	requireBench(b)
	dur := 10 * time.Minute
	if v := os.Getenv("LAB_RATE_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute {
			b.Fatalf("LAB_RATE_DURATION=%q: want a duration of at least 1m", v)
		}
		dur = d
	}
	const every = 10 * time.Second
	n := int(dur / every)
	for range b.N {
		e := newTestEnv(b, 4)
		e.Cfg = DefaultConfig() // the shipped settings (equal to config.yaml's, cmd/recstream TestShippedConfigMatchesDefaults)
		e.Cfg.StatusInterval = 0
		w, _ := e.benchWorker(b, "lab", fakeRecommender{})
		r := start(w)
		// The worker holds the four leases before the first event (a first object proves it).
		e.put(b, [][]byte{event(0, "warm")})
		stacktest.Eventually(b, 3*time.Minute, 500*time.Millisecond, func() bool { return len(e.read(b).count) == 1 },
			"warm-up record not written")
		putAt, seenAt, objects := e.putAndWatch(b, "lab", n, every, e.Cfg.Flush.MaxAge+e.Cfg.Flush.WindowGrace+time.Minute)
		if err := r.stop(b); err != nil {
			b.Fatal(err)
		}
		perShard := map[string]int{}
		for _, shard := range objects {
			perShard[shard]++
		}
		most := 0
		for _, c := range perShard {
			most = max(most, c)
		}
		lat := make([]time.Duration, n)
		for i := range lat {
			lat[i] = seenAt[i].Sub(putAt[i])
		}
		slices.Sort(lat)
		p99 := lat[min(n-1, int(0.99*float64(n)+0.5)-1)]
		b.Logf("%s at one event per %s: %d objects (per shard %v), p50 %s, p99 %s, max %s",
			dur, every, len(objects), perShard, lat[n/2].Round(100*time.Millisecond), p99.Round(100*time.Millisecond), lat[n-1].Round(100*time.Millisecond))
		b.ReportMetric(float64(most), "max-objects/shard")
		b.ReportMetric(float64(most)*float64(time.Hour)/float64(dur), "objects/shard-hour")
		b.ReportMetric(lat[n/2].Seconds(), "p50-s")
		b.ReportMetric(p99.Seconds(), "p99-s")
		if limit := int(dur / time.Minute); most > limit {
			b.Errorf("a shard holds %d objects after %s at the lab's rate, want <= %d (60 per shard-hour)", most, dur, limit)
		}
		if p99 > 65*time.Second {
			b.Errorf("p99 put→visible %s, want <= 65 s", p99)
		}
	}
}

// procStatusKB reads a "VmXxx:   123 kB" line of /proc/<pid>/status.
func procStatusKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// BenchmarkPeakRSS is issue benchmark (d): a worker process (this test binary re-executed,
// fake recommender) with the default flush limits drains 8 pre-loaded shards, each holding
// more than a full buffer (flush.max_records 10,000); the figure is
// its VmHWM (peak resident set) read from /proc before SIGTERM.
func BenchmarkPeakRSS(b *testing.B) {
	requireBench(b)
	const n = 96000 // 12,000 per shard: every shard fills a 10,000-record buffer (the default limit)
	for range b.N {
		e := newTestEnv(b, 8)
		cfg := DefaultConfig()
		cfg.ShardSyncInterval = time.Second
		cfg.StatusInterval = 0
		e.Cfg = cfg
		e.preload(b, "rss", n)
		cmd := startChild(b, e, "rss", 0)
		stacktest.Eventually(b, 5*time.Minute, 3*time.Second, func() bool { return len(e.read(b).count) >= n },
			"worker did not write the %d records", n)
		hwm, err := procStatusKB(cmd.Process.Pid, "VmHWM")
		if err != nil {
			b.Fatal(err)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := waitExit(b, cmd, time.Minute); err != nil {
			b.Fatalf("worker exit: %v", err)
		}
		if err := exactlyOnce(e.read(b), "rss", n); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(hwm)/1024, "peak-RSS-MB")
	}
}

// visibleObjects lists the output a reader can see now: the Hive objects (errors/ excluded),
// or the live data files of the Iceberg table's current snapshot. It returns when it looked.
func (e *testEnv) visibleObjects(b *testing.B) ([]string, time.Time) {
	b.Helper()
	if e.Ice != nil {
		snap := e.Ice.ReadTable(b)
		now := time.Now()
		var keys []string
		for _, f := range snap.Files {
			keys = append(keys, f.Path)
		}
		return keys, now
	}
	objs, err := e.store.List(context.Background(), "")
	now := time.Now()
	if err != nil {
		b.Fatalf("list: %v", err)
	}
	var keys []string
	for _, o := range objs {
		if !strings.HasPrefix(o.Key, ErrorsPrefix+"/") {
			keys = append(keys, o.Key)
		}
	}
	return keys, now
}

// readObject reads one object of visibleObjects.
func (e *testEnv) readObject(b *testing.B, key string) []OutputRecord {
	b.Helper()
	if e.Ice != nil {
		body, err := e.Ice.Read(key)
		if err != nil {
			b.Fatal(err)
		}
		rows, err := parquet.Read[TableRecord](bytes.NewReader(body), int64(len(body)))
		if err != nil {
			b.Fatalf("%s: %v", key, err)
		}
		out := make([]OutputRecord, len(rows))
		for i := range rows {
			out[i] = OutputRecord(rows[i])
		}
		return out
	}
	body, err := objstore.ReadAll(context.Background(), e.store, key)
	if err != nil {
		b.Fatalf("read %s: %v", key, err)
	}
	recs, err := DecodeObject(e.Cfg.Format, body)
	if err != nil {
		b.Fatalf("%s: %v", key, err)
	}
	return recs
}
