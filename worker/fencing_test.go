package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	chk "github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"
	kclworker "github.com/vmware/vmware-go-kcl-v2/clientlibrary/worker"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/stacktest"
)

// TestFencedProcessorCannotWrite: a processor whose lease was taken over by another worker
// writes no object and cannot move the checkpoint; it drops its buffer.
func TestFencedProcessorCannotWrite(t *testing.T) {
	e := newTestEnv(t, 1)
	log := testLogger(t)
	cfg := testConfig()
	cfg.FailoverTime = 2 * time.Second
	cfg.LeaseSafetyMargin = 500 * time.Millisecond
	cfg.Flush = FlushConfig{MaxRecords: 100, MaxBytes: 1 << 20, MaxAge: time.Second}
	newStore := func(id string) *checkpoint.Store {
		s, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: id, FailoverTime: cfg.FailoverTime, Logger: log}, e.db)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := newStore("a"), newStore("b")
	if err := a.Init(); err != nil {
		t.Fatal(err)
	}
	const shardID = "shardId-000000000000"
	shardA := &par.ShardStatus{ID: shardID, Mux: &sync.RWMutex{}}
	if err := a.GetLease(shardA, "a"); err != nil {
		t.Fatalf("a acquires: %v", err)
	}
	metrics, _ := NewMetrics(nil)
	var stopping atomic.Bool
	s := &shared{cfg: cfg, stream: e.Stream, lease: a, ctx: context.Background(), stopping: &stopping, live: map[string]*processor{},
		deps: Deps{Store: e.store, Recommender: fakeRecommender{}, K: 1, Log: log, Metrics: metrics,
			IsLeaseLost: func(err error) bool { return errors.Is(err, checkpoint.ErrLeaseLost) }}}
	p := s.CreateProcessor().(*processor)
	p.Initialize(&kcl.InitializationInput{ShardId: shardID})
	cp := kclworker.NewRecordProcessorCheckpoint(shardA, a)
	now := time.Now()
	var recs []ktypes.Record
	for i, seq := range []string{"101", "102", "103"} {
		recs = append(recs, ktypes.Record{Data: event(i, "f"), SequenceNumber: aws.String(seq), PartitionKey: aws.String("k"), ApproximateArrivalTimestamp: &now})
	}
	p.ProcessRecords(&kcl.ProcessRecordsInput{Records: recs, Checkpointer: cp})
	if p.buf.n != 3 {
		t.Fatalf("buffered %d records, want 3 (not yet due)", p.buf.n)
	}

	// a stops renewing (a stalled process); b takes the lease once it has seen the counter
	// unchanged for failover_time.
	shardB := &par.ShardStatus{ID: shardID, Mux: &sync.RWMutex{}}
	stacktest.Eventually(t, 20*time.Second, 200*time.Millisecond, func() bool { return b.GetLease(shardB, "b") == nil }, "b never took the lease")

	// a's processor wakes up with a due buffer: it must not upload, and it drops the buffer.
	time.Sleep(cfg.Flush.MaxAge)
	p.ProcessRecords(&kcl.ProcessRecordsInput{Checkpointer: cp})
	if p.state != stateDead || p.buf.n != 0 {
		t.Fatalf("state %v, %d buffered: want dead with the buffer dropped", p.state, p.buf.n)
	}
	if objs, err := e.store.List(context.Background(), ""); err != nil || len(objs) != 0 {
		t.Fatalf("fenced processor wrote %d objects (%v)", len(objs), err)
	}
	// And a direct checkpoint by the old owner is refused by the store.
	if err := cp.Checkpoint(aws.String("103")); !errors.Is(err, checkpoint.ErrLeaseLost) {
		t.Fatalf("old owner's checkpoint: %v, want ErrLeaseLost", err)
	}
	probe := &par.ShardStatus{ID: shardID, Mux: &sync.RWMutex{}}
	if err := b.FetchCheckpoint(probe); err != nil && !errors.Is(err, chk.ErrSequenceIDNotFound) {
		t.Fatalf("fetch: %v", err)
	}
	if c := probe.GetCheckpoint(); c != "" {
		t.Fatalf("checkpoint moved to %q by the fenced owner", c)
	}
}
