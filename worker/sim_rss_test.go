//go:build leasesim

package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/leasesim"
	"github.com/recstream/recstream/internal/objstore"
)

// simRSSEnv carries the spec of a BenchmarkSimPeakRSS child process.
const simRSSEnv = "RECSTREAM_SIM_RSS_CHILD"

type simRSSSpec struct {
	Shards, PerShard int
	Budget           int64
}

type simRSSResult struct {
	MaxLeases        float64 // most shards held at once
	LiveHeapMB       float64 // most live heap after a GC (runtime/metrics /gc/heap/live:bytes)
	Records          int64
	Seconds          float64
	HWMKB            int64
	BudgetPeakBytes  int64
	BudgetWaits      uint64
	BudgetWaitSecond float64
}

// The child runs before TestMain (it is a whole worker process, not a test).
func init() {
	if spec := os.Getenv(simRSSEnv); spec != "" {
		os.Exit(simRSSChild(spec))
	}
}

// BenchmarkSimPeakRSS is issue 21's memory target: one worker process drains a backlog of
// 12,000 events per shard (more than a full 10,000-record buffer each) on 4, 16 and 64 shards,
// with the shipped config (GetRecords pages of 10,000, flush 10,000 records / 60 s windows,
// Parquet), with the buffer budget (shipped 256 MiB) and without it (1 TiB). The process is
// this test binary re-executed. Kinesis and the lease table are the lease simulation's, in the
// worker's process: the backlog is made on demand (nothing stored), the table holds a row per
// shard; objects go to a sink that discards them. So the peak resident set (VmHWM) is the
// worker's own, plus the simulation's page being built. Unlike the real stack, pages are not
// JSON-decoded from HTTP bodies (the SDK's transient copy of a page is not in the figure).
//
//	go test -tags leasesim -run '^$' -bench SimPeakRSS -benchtime 1x ./worker/
func BenchmarkSimPeakRSS(b *testing.B) {
	for _, shards := range []int{4, 16, 64} {
		for _, budget := range []struct {
			name  string
			bytes int64
		}{{"budget=256MiB", DefaultConfig().BufferBudgetBytes}, {"budget=off", 1 << 40}} {
			b.Run(fmt.Sprintf("shards=%d/%s", shards, budget.name), func(b *testing.B) {
				for range b.N {
					r := runSimRSSChild(b, simRSSSpec{Shards: shards, PerShard: 40000, Budget: budget.bytes})
					b.ReportMetric(float64(r.HWMKB)/1024, "peak-RSS-MB")
					b.ReportMetric(float64(r.Records)/r.Seconds, "events/s")
					b.ReportMetric(float64(r.BudgetPeakBytes)/(1<<20), "budget-peak-MiB")
					b.ReportMetric(r.BudgetWaitSecond, "budget-wait-s")
					b.ReportMetric(r.MaxLeases, "max-leases")
					b.ReportMetric(r.LiveHeapMB, "live-heap-MB")
				}
			})
		}
	}
}

func runSimRSSChild(b *testing.B, spec simRSSSpec) simRSSResult {
	b.Helper()
	js, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), simRSSEnv+"="+string(js))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("child %+v: %v\n%s", spec, err, tail(stderr.String(), 4000))
	}
	var r simRSSResult
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "SIMRSS "); ok {
			if err := json.Unmarshal([]byte(v), &r); err != nil {
				b.Fatal(err)
			}
		}
	}
	if want := int64(spec.Shards * spec.PerShard); r.Records != want {
		b.Fatalf("child %+v wrote %d records, want %d\n%s", spec, r.Records, want, tail(stderr.String(), 4000))
	}
	return r
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// discardSink is an object store that reads and drops every object.
type discardSink struct{ bytes atomic.Int64 }

func (d *discardSink) Put(_ context.Context, _ string, body io.Reader) error {
	n, err := io.Copy(io.Discard, body)
	d.bytes.Add(n)
	return err
}
func (*discardSink) Get(context.Context, string) (io.ReadCloser, error) {
	return nil, objstore.ErrNotExist
}
func (*discardSink) List(context.Context, string) ([]objstore.Object, error) { return nil, nil }
func (*discardSink) Delete(context.Context, string) error                    { return nil }
func (*discardSink) URL(key string) string                                   { return "discard://" + key }

func gaugeValue(g prometheus.Gauge) float64 {
	var d dto.Metric
	_ = g.Write(&d)
	return d.GetGauge().GetValue()
}

func simRSSChild(js string) int {
	var spec simRSSSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "spec:", err)
		return 2
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	log, _ := zc.Build()
	cfg := DefaultConfig()
	cfg.WorkerID = "rss"
	cfg.StatusInterval = 0
	cfg.BufferBudgetBytes = spec.Budget
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set { // as `recstream worker` does
		debug.SetMemoryLimit(SoftMemoryLimit(cfg))
	}
	stream := leasesim.NewStream("rss", spec.Shards)
	// A round trip per GetRecords, as Kinesis takes (and so that the library's 5 reads a
	// second per shard are not spun through).
	stream.SetReadLatency(20 * time.Millisecond)
	// An hour ago: every 60 s window is long over, so the tail of each shard is flushed at
	// its first empty read, as a replayed backlog is.
	// Payloads are made once and copied per record (each record owns its bytes, as an SDK
	// answer's do): made under the simulated stream's lock, json.Marshal per record would
	// serialise every shard's reads behind one another.
	payloads := make([][]byte, 1000)
	for i := range payloads {
		payloads[i] = event(i, "rss")
	}
	stream.Backlog(spec.PerShard, time.Now().Add(-time.Hour), func(shard, i int) []byte {
		return append([]byte(nil), payloads[(shard*7919+i)%len(payloads)]...)
	})
	table := leasesim.NewTable("rss", checkpoint.AttrShardID)
	store, err := checkpoint.New(checkpoint.Config{Table: "rss", WorkerID: cfg.WorkerID, FailoverTime: cfg.FailoverTime, Logger: log}, table.Client(nil))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	w, err := New(cfg, Stream{Kinesis: awsenv.KinesisConfig{Stream: "rss", Region: "us-east-1", Shards: spec.Shards},
		DynamoDB: awsenv.DynamoDBConfig{LeaseTable: "rss", Region: "us-east-1"}},
		Deps{Store: &discardSink{}, Recommender: fakeRecommender{}, K: 5, Log: log, Metrics: m, IsLeaseLost: isLeaseLost},
		stream.Client(cfg.WorkerID, nil, time.Now), store)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- w.Run(ctx) }()
	want := float64(spec.Shards * spec.PerShard)
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var r simRSSResult
	deadline := time.After(10 * time.Minute)
	for counterSum(reg, "recstream_worker_records_out_total") < want {
		select {
		case err := <-done:
			fmt.Fprintln(os.Stderr, "worker ended:", err)
			return 1
		case <-deadline:
			fmt.Fprintf(os.Stderr, "drain not done after 10 minutes: %v of %v records\n", counterSum(reg, "recstream_worker_records_out_total"), want)
			return 1
		case <-time.After(100 * time.Millisecond):
		}
		r.MaxLeases = max(r.MaxLeases, gaugeValue(m.LeasesHeld))
		metrics.Read(live)
		r.LiveHeapMB = max(r.LiveHeapMB, float64(live[0].Value.Uint64())/(1<<20))
	}
	r.Seconds = time.Since(start).Seconds()
	r.Records = int64(counterSum(reg, "recstream_worker_records_out_total"))
	hwm, err := procStatusKB(os.Getpid(), "VmHWM")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r.HWMKB = hwm
	if s := w.running.Load(); s != nil && s.budget != nil {
		s.budget.mu.Lock()
		r.BudgetPeakBytes = s.budget.peak
		s.budget.mu.Unlock()
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "recstream_worker_buffer_budget_wait_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			r.BudgetWaits, r.BudgetWaitSecond = h.GetSampleCount(), h.GetSampleSum()
		}
	}
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	js2, _ := json.Marshal(r)
	fmt.Printf("SIMRSS %s\n", js2)
	return 0
}
