package worker

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/objstore"
)

// stalledStore is an object store whose Put, once stall is set, hangs until its context ends
// (S3 unreachable).
type stalledStore struct {
	objstore.Store
	stall   atomic.Bool
	started chan struct{}
}

func (s *stalledStore) Put(ctx context.Context, key string, body io.Reader) error {
	if !s.stall.Load() {
		return s.Store.Put(ctx, key, body)
	}
	select {
	case s.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestShutdownReportWhileFlushing pins a data race: the shutdown-timeout report read each
// shard's buffered record count and checkpoint from Run's goroutine while the shard's consumer
// goroutine was still taking records or inside a hanging flush. The report now reads
// published atomics; run with -race (the first phase polls while batches are processed). It
// also checks what the report says, and that abandoning the drain kills the processor.
func TestShutdownReportWhileFlushing(t *testing.T) {
	dir, err := objstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := &stalledStore{Store: dir, started: make(chan struct{}, 1)}
	cfg := testConfig()
	cfg.Flush = FlushConfig{MaxRecords: 5, MaxBytes: 1 << 20, MaxAge: time.Hour}
	metrics, _ := NewMetrics(nil)
	drainCtx, abandon := context.WithCancel(context.Background())
	defer abandon()
	var stopping atomic.Bool
	s := &shared{cfg: cfg, stream: "s", lease: alwaysHeld{}, ctx: drainCtx, stopping: &stopping, live: map[string]*processor{},
		deps: Deps{Store: st, Recommender: fakeRecommender{}, K: 1, Log: zap.NewNop(), Metrics: metrics}}
	p := s.CreateProcessor().(*processor)
	const shardID = "shardId-000000000007"
	p.Initialize(&kcl.InitializationInput{ShardId: shardID, ExtendedSequenceNumber: &kcl.ExtendedSequenceNumber{SequenceNumber: aws.String("100")}})
	now := time.Now()
	seq := 100
	batch := func(n int) []ktypes.Record {
		recs := make([]ktypes.Record, n)
		for i := range recs {
			seq++
			recs[i] = ktypes.Record{Data: event(seq, "x"), SequenceNumber: aws.String(fmt.Sprint(seq)), PartitionKey: aws.String("k"), ApproximateArrivalTimestamp: &now}
		}
		return recs
	}
	// Phase 1: reports race with a consumer that takes and flushes records.
	stopPolling := make(chan struct{})
	polled := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stopPolling:
				polled <- n
				return
			default:
				n += len(s.snapshot())
			}
		}
	}()
	for range 10 {
		p.ProcessRecords(&kcl.ProcessRecordsInput{Records: batch(7), Checkpointer: nopCheckpointer{}})
	}
	close(stopPolling)
	if n := <-polled; n == 0 {
		t.Fatal("the report never saw the live processor")
	}
	// 70 records in, flushed every 5: the checkpoint is the 70th, nothing buffered.
	if rep := s.snapshot(); len(rep) != 1 || rep[0] != (shardReport{shard: shardID, checkpoint: "170", buffered: 0}) {
		t.Fatalf("report %+v, want checkpoint 170 with nothing buffered", rep)
	}

	// Phase 2: S3 hangs during a flush, as when a drain times out.
	st.stall.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.ProcessRecords(&kcl.ProcessRecordsInput{Records: batch(5), Checkpointer: nopCheckpointer{}})
	}()
	select {
	case <-st.started:
	case <-time.After(30 * time.Second):
		t.Fatal("flush never started")
	}
	// The consumer goroutine is inside Put: this is the moment Run's timeout path reports.
	rep := s.snapshot()
	if len(rep) != 1 || rep[0] != (shardReport{shard: shardID, checkpoint: "170", buffered: 5}) {
		t.Fatalf("report %+v, want shard %s at checkpoint 170 with 5 buffered", rep, shardID)
	}
	abandon()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("processor did not give up after the drain was abandoned")
	}
	if p.state != stateDead {
		t.Fatalf("state %v, want dead", p.state)
	}
	if rep := s.snapshot(); len(rep) != 0 {
		t.Fatalf("dead processor still reported: %+v", rep)
	}
}
