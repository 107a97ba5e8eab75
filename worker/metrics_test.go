package worker

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"

	"github.com/recstream/recstream/checkpoint/checkpointtest"
	"github.com/recstream/recstream/internal/objstore"
)

// TestShardSeriesBoundedAcrossLeaseMoves pins unbounded series growth: the counters and
// histograms labelled shard_id (records, flushes, retries{op}, records_failed{reason},
// leases_lost) stayed for every shard a process ever held, so a long-lived worker through
// resharding and lease moves exported ever more series. Now every series of a shard goes
// shardSeriesRetention after its processor ends, whichever way it ends, and the series count
// returns to what the shards held now export.
func TestShardSeriesBoundedAcrossLeaseMoves(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	clock := checkpointtest.NewClock(time.Now())
	cfg := testConfig()
	cfg.Flush.MaxRecords = 2 // every batch below flushes: output objects, checkpoint, flush histogram
	cfg.Retry = RetryConfig{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	store, err := objstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64 // every other recommend fails once: retries{op="recommend"}
	rec := fakeRecommender{fail: func() bool { return calls.Add(1)%2 == 1 }}
	var stopping atomic.Bool
	s := &shared{cfg: cfg, stream: "series", lease: alwaysHeld{}, ctx: context.Background(), stopping: &stopping,
		live: map[string]*processor{}, deps: Deps{Store: store, Recommender: rec, K: 1, Log: testLogger(t), Metrics: metrics, Now: clock.Now}}
	seq := 1000
	take := func(shard string) *processor {
		p := s.CreateProcessor().(*processor)
		p.Initialize(&kcl.InitializationInput{ShardId: shard, ExtendedSequenceNumber: &kcl.ExtendedSequenceNumber{SequenceNumber: aws.String("1000")}})
		now := time.Now()
		var recs []ktypes.Record
		for _, b := range [][]byte{event(seq, shard), []byte("not json"), event(seq+1, shard)} {
			seq++
			recs = append(recs, ktypes.Record{Data: b, SequenceNumber: aws.String(fmt.Sprint(seq)), PartitionKey: aws.String("pk"), ApproximateArrivalTimestamp: &now})
		}
		p.ProcessRecords(&kcl.ProcessRecordsInput{Records: recs, Checkpointer: &lastCheckpointer{}, MillisBehindLatest: 5})
		s.observe(clock.Now()) // checkpoint age, stalled
		return p
	}
	// The shards held throughout: what the registry exports for them is the baseline.
	for i := range 3 {
		take(fmt.Sprintf("shardId-held-%d", i))
	}
	baseline := testutil.CollectAndCount(reg)
	perVec := map[string]int{}
	for _, name := range shardVecNames {
		perVec[name] = testutil.CollectAndCount(reg, name)
	}
	for _, name := range shardVecNames {
		if perVec[name] == 0 {
			t.Fatalf("the held shards export no %s: the test does not exercise it", name)
		}
	}

	// Take and release many shards, every way a processor ends.
	const moved = 300
	for i := range moved {
		shard := fmt.Sprintf("shardId-moved-%04d", i)
		p := take(shard)
		switch i % 3 {
		case 0: // lease lost while processing
			p.die("lease lost", errors.New("test: lease lost"))
		case 1: // handed over or worker stopping: the library calls Shutdown
			p.Shutdown(&kcl.ShutdownInput{ShutdownReason: kcl.REQUESTED, Checkpointer: &lastCheckpointer{}})
		case 2: // the library ended the consumer silently (lease renewal failed)
			s.forget(shard)
		}
	}
	// A shard that comes back before its series were deleted keeps them.
	back := "shardId-moved-0001"
	take(back)
	if n := testutil.CollectAndCount(reg); n <= baseline {
		t.Fatalf("%d series with %d shards moved through, baseline %d: the test moved nothing", n, moved, baseline)
	}
	// Within the retention a released shard's last increments are still there to scrape.
	if got := testutil.ToFloat64(metrics.LeasesLost.WithLabelValues("shardId-moved-0000")); got != 1 {
		t.Fatalf("leases_lost_total of a shard just lost = %v, want 1 until it is scraped", got)
	}
	clock.Advance(shardSeriesRetention)
	s.observe(clock.Now())

	// Only the held shards' series (and the one that came back) remain.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "shard_id" && strings.HasPrefix(l.GetValue(), "shardId-moved-") && l.GetValue() != back {
					t.Errorf("%s{shard_id=%q} still exported after the shard was released", mf.GetName(), l.GetValue())
				}
			}
		}
	}
	if testutil.ToFloat64(metrics.RecordsIn.WithLabelValues(back)) != 2*3 {
		t.Errorf("records_in_total of the shard that came back = %v, want both holds' 3 each", testutil.ToFloat64(metrics.RecordsIn.WithLabelValues(back)))
	}
	s.forget(back)
	clock.Advance(shardSeriesRetention)
	s.observe(clock.Now())
	for _, name := range shardVecNames {
		if n := testutil.CollectAndCount(reg, name); n != perVec[name] {
			t.Errorf("%s: %d series after %d shards moved through, want the held shards' %d", name, n, moved, perVec[name])
		}
	}
	if n := testutil.CollectAndCount(reg); n != baseline {
		t.Fatalf("%d series after %d shards moved through, want the baseline %d", n, moved, baseline)
	}
}

// shardVecNames are the series labelled shard_id (TestShardVecsCoverEveryShardLabel keeps the
// list and Metrics.shardVecs in step).
var shardVecNames = []string{
	"recstream_worker_records_in_total", "recstream_worker_records_out_total", "recstream_worker_records_failed_total",
	"recstream_worker_millis_behind_latest", "recstream_worker_flush_objects_total", "recstream_worker_flush_bytes_total",
	"recstream_worker_flush_duration_seconds", "recstream_worker_retries_total", "recstream_worker_leases_lost_total",
	"recstream_worker_last_checkpoint_timestamp_seconds", "recstream_worker_checkpoint_age_seconds", "recstream_worker_shard_stalled",
}

// TestShardVecsCoverEveryShardLabel: every vector of Metrics labelled shard_id is one that
// deleteShardSeries clears, so a vector added later cannot grow without bound unnoticed.
func TestShardVecsCoverEveryShardLabel(t *testing.T) {
	m, _ := NewMetrics(nil)
	cleared := map[*prometheus.MetricVec]bool{}
	for _, v := range m.shardVecs() {
		cleared[v] = true
	}
	rv := reflect.ValueOf(m).Elem()
	named := 0
	for i := range rv.NumField() {
		c, ok := rv.Field(i).Interface().(prometheus.Collector)
		if !ok {
			continue
		}
		ch := make(chan *prometheus.Desc, 1)
		c.Describe(ch)
		desc := (<-ch).String()
		if !strings.Contains(desc, "shard_id") {
			continue
		}
		var vec *prometheus.MetricVec
		switch v := c.(type) {
		case *prometheus.CounterVec:
			vec = v.MetricVec
		case *prometheus.GaugeVec:
			vec = v.MetricVec
		case *prometheus.HistogramVec:
			vec = v.MetricVec
		}
		if !cleared[vec] {
			t.Errorf("Metrics.%s is labelled shard_id but not in shardVecs: its series would outlive the shard", rv.Type().Field(i).Name)
		}
		found := false
		for _, n := range shardVecNames {
			found = found || strings.Contains(desc, `"`+n+`"`)
		}
		if !found {
			t.Errorf("Metrics.%s (%s) is missing from shardVecNames", rv.Type().Field(i).Name, desc)
		}
		named++
	}
	if named != len(shardVecNames) || named != len(m.shardVecs()) {
		t.Fatalf("%d shard_id vectors, %d names, %d in shardVecs", named, len(shardVecNames), len(m.shardVecs()))
	}
}
