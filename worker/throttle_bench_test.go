package worker

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/faults"
	"github.com/recstream/recstream/internal/stacktest"
)

// faultSeedEnv picks the seed of BenchmarkDrainThrottled's fault draws (default 1).
const faultSeedEnv = "RECSTREAM_FAULT_SEED"

// throttleRate is the share of GetRecords and PutObject calls BenchmarkDrainThrottled throttles.
const throttleRate = 0.05

// BenchmarkDrainThrottled drains one pre-loaded 4-shard backlog twice in one run, each time as
// its own application (lease table, output prefix) through fault proxies in front of Kinesis
// and S3: clean, then with 5 % of GetRecords answered ProvisionedThroughputExceededException
// and 5 % of PutObject answered 503 SlowDown (no other call is touched). Pages and objects are
// of 1,000 records so that 5 % is dozens of faults, not one or none. The rate is from the
// worker's first record to the last record written and checkpointed. It fails when the
// throttled rate is below 0.8 of the clean one, or when a run did not write every event exactly
// once.
//
//	RECSTREAM_WORKER_BENCH=1 go test -run '^$' -bench BenchmarkDrainThrottled -benchtime 1x ./worker/
func BenchmarkDrainThrottled(b *testing.B) {
	requireBench(b)
	const n = 120000
	seed := uint64(1)
	if s := os.Getenv(faultSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			b.Fatalf("%s=%q: %v", faultSeedEnv, s, err)
		}
		seed = v
	}
	for range b.N {
		e := newTestEnv(b, 4)
		e.Cfg = DefaultConfig()
		e.Cfg.Flush.MaxAge = time.Second // equal 1 s windows in both runs: no tail waits for a 60 s window
		e.Cfg.MaxRecords = 1000
		e.Cfg.Flush.MaxRecords = 1000
		// The library takes at most one new lease per shard sync: sync often so that the four
		// shards start within a second of each other.
		e.Cfg.ShardSyncInterval = 250 * time.Millisecond
		e.Cfg.StatusInterval = 0
		e.preload(b, "thr", n)

		clean := e.drainVia(b, "clean", n, seed, 0)
		thr := e.drainVia(b, "throttled", n, seed, throttleRate)
		ratio := thr.rate / clean.rate
		b.Logf("seed %d: clean %.0f events/s (%d GetRecords, %d PutObject); throttled %.0f events/s, "+
			"%d of %d GetRecords throttled, %d of %d PutObject SlowDown; ratio %.3f",
			seed, clean.rate, clean.getRecords, clean.putObject, thr.rate,
			thr.throttled, thr.getRecords, thr.slowDown, thr.putObject, ratio)
		b.ReportMetric(clean.rate, "clean-events/s")
		b.ReportMetric(thr.rate, "throttled-events/s")
		b.ReportMetric(ratio, "ratio")
		b.ReportMetric(float64(thr.throttled), "getrecords-throttled")
		b.ReportMetric(float64(thr.getRecords), "getrecords-calls")
		b.ReportMetric(float64(thr.slowDown), "putobject-slowdown")
		b.ReportMetric(float64(thr.putObject), "putobject-calls")
		if thr.throttled == 0 || thr.slowDown == 0 {
			b.Fatalf("no fault met (%d GetRecords throttled, %d PutObject SlowDown): nothing measured", thr.throttled, thr.slowDown)
		}
		if ratio < 0.8 {
			b.Fatalf("throttled drain %.0f events/s is %.3f of the clean %.0f, want >= 0.8", thr.rate, ratio, clean.rate)
		}
	}
}

// drainResult is one drain's rate and what its proxies saw up to the last record.
type drainResult struct {
	rate                  float64 // events/s
	getRecords, throttled int
	putObject, slowDown   int
}

// drainVia drains e's stream as application name: its own lease table and output prefix, the
// worker's Kinesis and S3 calls through fault proxies that throttle rate of GetRecords and
// answer SlowDown to rate of PutObject. It fails the benchmark unless every one of the n events
// is written exactly once.
func (e *testEnv) drainVia(b *testing.B, name string, n int, seed uint64, rate float64) drainResult {
	b.Helper()
	ctx := context.Background()
	kp, err := faults.NewOpHTTP(faults.Kinesis, e.Kinesis.Endpoint, seed)
	if err != nil {
		b.Fatal(err)
	}
	defer kp.Close()
	sp, err := faults.NewOpHTTP(faults.S3, e.S3.Endpoint, seed)
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	if err := kp.SetRate("GetRecords", faults.Throughput, rate); err != nil {
		b.Fatal(err)
	}
	if err := sp.SetRate("PutObject", faults.SlowDown, rate); err != nil {
		b.Fatal(err)
	}

	a := *e
	a.DynamoDB.LeaseTable = e.Stream + "-" + name + "-leases"
	a.Location = e.Location + "-" + name
	a.store = a.openStore(b) // direct: the check reads past the proxies
	b.Cleanup(func() {
		ctx := context.Background()
		_, _ = a.db.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(a.DynamoDB.LeaseTable)})
		if objs, err := a.store.List(ctx, ""); err == nil {
			for _, o := range objs {
				_ = a.store.Delete(ctx, o.Key)
			}
		}
	})
	direct := a.store
	a.Kinesis.Endpoint, a.S3.Endpoint = kp.URL(), sp.URL()
	if a.kc, err = awsenv.Kinesis(ctx, a.Kinesis); err != nil {
		b.Fatal(err)
	}

	rec := &firstCall{}
	w, reg := a.benchWorker(b, "thr-"+name, rec) // its store opened through sp
	r := start(w)
	stacktest.Eventually(b, 5*time.Minute, 20*time.Millisecond, func() bool {
		return counterSum(reg, "recstream_worker_records_out_total") >= float64(n)
	}, "%s: worker did not write %d records", name, n)
	d := time.Since(rec.at)
	kf, kr := kp.Counts()
	sf, sr := sp.Counts()
	if err := r.stop(b); err != nil {
		b.Fatal(err)
	}
	a.store = direct
	if err := exactlyOnce(a.read(b), "thr", n); err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return drainResult{rate: float64(n) / d.Seconds(),
		getRecords: kr["GetRecords"], throttled: kf[faults.OpFault{Op: "GetRecords", Kind: faults.Throughput}],
		putObject: sr["PutObject"], slowDown: sf[faults.OpFault{Op: "PutObject", Kind: faults.SlowDown}]}
}
