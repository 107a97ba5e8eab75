package worker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// alwaysHeld is a Lease for benchmarks that drive the processor without a lease table.
type alwaysHeld struct{}

func (alwaysHeld) HeldUntil(string) (time.Time, bool) { return time.Now().Add(time.Hour), true }

// nopCheckpointer: the benchmark measures the processing path, not DynamoDB.
type nopCheckpointer struct{}

func (nopCheckpointer) Checkpoint(*string) error { return nil }
func (nopCheckpointer) PrepareCheckpoint(*string) (kcl.IPreparedCheckpointer, error) {
	return nil, nil
}

// benchStore is a fresh prefix of the recommendations bucket on the S3 gateway, emptied after
// the benchmark.
func benchStore(b *testing.B, prefix string) objstore.Store {
	b.Helper()
	return stacktest.S3Store(b, "recommendations", prefix)
}

// BenchmarkProcessingPath is issue benchmark (a) with the fake Recommender standing in for the
// model and pgvector: decode + enrich + Parquet (Snappy) encode + upload to the S3 gateway, in
// 1000-record GetRecords batches, one object per 10,000 records.
func BenchmarkProcessingPath(b *testing.B) {
	stacktest.SetAWSEnv(b)
	store := benchStore(b, "bench-")
	cfg := testConfig()
	cfg.Flush = FlushConfig{MaxRecords: 10000, MaxBytes: 64 << 20, MaxAge: time.Hour}
	metrics, _ := NewMetrics(nil)
	var stopping atomic.Bool
	s := &shared{cfg: cfg, stream: "bench", lease: alwaysHeld{}, ctx: context.Background(), stopping: &stopping, live: map[string]*processor{},
		deps: Deps{Store: store, Recommender: fakeRecommender{}, K: 5, Log: zap.NewNop(), Metrics: metrics}}
	p := s.CreateProcessor().(*processor)
	p.Initialize(&kcl.InitializationInput{ShardId: "shardId-000000000000"})
	now := time.Now()
	const batch = 1000
	seq := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		recs := make([]ktypes.Record, batch)
		for j := range recs {
			seq++
			recs[j] = ktypes.Record{Data: event(seq, "b"), SequenceNumber: aws.String(fmt.Sprintf("%020d", seq)), PartitionKey: aws.String("k"), ApproximateArrivalTimestamp: &now}
		}
		b.StartTimer()
		p.ProcessRecords(&kcl.ProcessRecordsInput{Records: recs, Checkpointer: nopCheckpointer{}})
	}
	b.StopTimer()
	if p.state != stateActive {
		b.Fatalf("processor state %v", p.state)
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecode compares the event decoder with the original map-based one (the oracle of
// FuzzDecode) on a typical event: the decoder was the processing path's hot spot.
func BenchmarkDecode(b *testing.B) {
	ev := event(42, "bench")
	lim := Limits{MaxBytes: 65536, MaxBrowseHistory: 100}
	for _, bc := range []struct {
		name string
		fn   func([]byte, Limits) (Event, error)
	}{{"fast", Decode}, {"reference", decodeReference}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.fn(ev, lim); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
