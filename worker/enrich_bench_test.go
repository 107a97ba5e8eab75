package worker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	"go.uber.org/zap"
)

// catalogRecommender models the recommender on a 1,000,000-item catalog: a call takes 20 ms
// plus 2.4 ms per user (one HNSW scan each; docs/benchmarks.md measured 446 queries/s and a
// 1.15 s round-trip p99 for 500 users per round trip at 1 M clustered items), and gives up
// when its context ends, as a cancelled query does.
type catalogRecommender struct {
	calls    atomic.Int64
	timedOut atomic.Int64
}

func (r *catalogRecommender) Recommend(ctx context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	r.calls.Add(1)
	t := time.NewTimer(20*time.Millisecond + time.Duration(len(users))*2400*time.Microsecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		r.timedOut.Add(1)
		return Recommendations{}, fmt.Errorf("items from %d users: %w", len(users), ctx.Err())
	case <-t.C:
	}
	return fakeRecommender{}.Recommend(ctx, users, anchors, k)
}

// BenchmarkBacklogSlowRecommender: a backlog of full 10,000-record pages on a 1 M-item catalog,
// with the shipped recommend_timeout (10 s), under which a whole page in one call (~24 s)
// times out. Before calls were bounded and split on a timeout, such a page was retried whole
// forever and the backlog never drained. recommend_batch=500 is the shipped bound;
// recommend_batch=10000 turns the bound off, so only the split on a timeout drains the page.
// One op is one page; it mostly sleeps (run it with -benchtime 1x).
func BenchmarkBacklogSlowRecommender(b *testing.B) {
	for _, batch := range []int{500, 10000} {
		b.Run(fmt.Sprintf("recommend_batch=%d", batch), func(b *testing.B) { benchBacklogSlowRecommender(b, batch) })
	}
}

func benchBacklogSlowRecommender(b *testing.B, batch int) {
	cfg := DefaultConfig()
	cfg.RecommendBatch = batch
	cfg.Flush.MaxAge = time.Hour // one object per full page
	cfg.Retry = RetryConfig{InitialBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
	metrics, _ := NewMetrics(nil)
	rec := &catalogRecommender{}
	var stopping atomic.Bool
	s := &shared{cfg: cfg, stream: "bench", lease: alwaysHeld{}, ctx: context.Background(), stopping: &stopping, live: map[string]*processor{},
		deps: Deps{Store: dirStore(b), Recommender: rec, K: 5, Log: zap.NewNop(), Metrics: metrics}}
	p := s.CreateProcessor().(*processor)
	const shard = "shardId-000000000000"
	p.Initialize(&kcl.InitializationInput{ShardId: shard})
	const page = 10000
	payloads := make([][]byte, page)
	for j := range payloads {
		payloads[j] = event(j, "slow")
	}
	now := time.Now()
	seq := 0
	b.ResetTimer()
	for range b.N {
		recs := make([]ktypes.Record, page)
		for j := range recs {
			seq++
			recs[j] = ktypes.Record{Data: payloads[j], SequenceNumber: aws.String(fmt.Sprintf("%020d", seq)), PartitionKey: aws.String("k"), ApproximateArrivalTimestamp: &now}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.ProcessRecords(&kcl.ProcessRecordsInput{Records: recs, Checkpointer: nopCheckpointer{}})
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			stopping.Store(true)
			<-done
			b.Fatalf("a page did not drain in 5 minutes: %d calls, %d timed out", rec.calls.Load(), rec.timedOut.Load())
		}
	}
	b.StopTimer()
	if out := testutil.ToFloat64(metrics.RecordsOut.WithLabelValues(shard)); p.state != stateActive || out != float64(b.N*page) {
		b.Fatalf("state %v, %v records written, want %d", p.state, out, b.N*page)
	}
	b.ReportMetric(float64(b.N*page)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(rec.calls.Load())/float64(b.N), "calls/page")
	b.ReportMetric(float64(rec.timedOut.Load())/float64(b.N), "timeouts/page")
}
