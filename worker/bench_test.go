package worker

import (
	"context"
	"fmt"
	"strings"
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
// 1000-record GetRecords batches, one object per 10,000 records. The sub-benchmarks mix in 0,
// 5 and 100 % malformed events (truncated JSON, a missing field, a wrong type, a NUL byte):
// rejected records of a flush share one errors/ object per hour, so a bad producer must not
// slow a shard down.
func BenchmarkProcessingPath(b *testing.B) {
	for _, pct := range []int{0, 5, 100} {
		b.Run(fmt.Sprintf("malformed=%d%%", pct), func(b *testing.B) { benchProcessingPath(b, pct) })
	}
}

// malformedEvent is the i-th of four kinds of events Decode rejects.
func malformedEvent(i int, run string) []byte {
	good := string(event(i, run))
	switch i % 4 {
	case 0:
		return []byte(good[:len(good)/2])
	case 1:
		return []byte(strings.Replace(good, `"customer_number":`, `"customer_numbr":`, 1))
	case 2:
		return []byte(strings.Replace(good, `"city":"Pasadena"`, `"city":7`, 1))
	default:
		return []byte(strings.Replace(good, `"city":"Pasadena"`, `"city":"Pasa\u0000dena"`, 1))
	}
}

func benchProcessingPath(b *testing.B, malformedPct int) {
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
	// Payloads are made before the clock starts (10 batches' worth, reused); each batch gets
	// fresh sequence numbers.
	payloads := make([][]byte, 10*batch)
	for j := range payloads {
		payloads[j] = event(j, "b")
		if j%100 < malformedPct {
			payloads[j] = malformedEvent(j, "b")
		}
	}
	seq := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		recs := make([]ktypes.Record, batch)
		for j := range recs {
			seq++
			recs[j] = ktypes.Record{Data: payloads[seq%len(payloads)], SequenceNumber: aws.String(fmt.Sprintf("%020d", seq)), PartitionKey: aws.String("k"), ApproximateArrivalTimestamp: &now}
		}
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
