package leasestatus

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	par "github.com/vmware/vmware-go-kcl-v2/clientlibrary/partition"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/leasesim"
)

// Round trips added to the simulated services, which answer at once: Kinesis control and read
// calls in the same region take tens of milliseconds, a consistent Scan of a 1,000-row lease
// table (about 200 KB, one page) about a hundred.
const (
	kinesisRoundTrip = 25 * time.Millisecond
	scanRoundTrip    = 100 * time.Millisecond
)

type slowKinesis struct{ KinesisReader }

func (k slowKinesis) ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	time.Sleep(kinesisRoundTrip)
	return k.KinesisReader.ListShards(ctx, in, opts...)
}

func (k slowKinesis) GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	time.Sleep(kinesisRoundTrip)
	return k.KinesisReader.GetShardIterator(ctx, in, opts...)
}

func (k slowKinesis) GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	time.Sleep(kinesisRoundTrip)
	return k.KinesisReader.GetRecords(ctx, in, opts...)
}

type slowTable struct{ LeaseLister }

func (t slowTable) ListLeases(ctx context.Context) ([]checkpoint.Lease, error) {
	time.Sleep(scanRoundTrip)
	return t.LeaseLister.ListLeases(ctx)
}

// TestReadAt1000Shards is issue 21's status target: the lease side of `recstream status`
// answers within 2 s at 1,000 shards held by 100 workers, every shard with its owner and lag.
// The services are the lease simulation's (the real checkpoint store and SDK clients against
// an in-memory table and stream) with the round trips above added. Before lagConcurrency went
// from 8 to 64 the 2,000 lag round trips alone took 1000 × 2 × 25 ms / 8 = 6.25 s.
func TestReadAt1000Shards(t *testing.T) {
	const shards, workers = 1000, 100
	const table = "status-scale"
	stream := leasesim.NewStream("status", shards)
	tab := leasesim.NewTable(table, checkpoint.AttrShardID)
	db := tab.Client(nil)
	stores := make([]*checkpoint.Store, workers)
	for i := range stores {
		s, err := checkpoint.New(checkpoint.Config{Table: table, WorkerID: fmt.Sprintf("w%03d", i), FailoverTime: time.Minute}, db)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Init(); err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	ids := stream.OpenShards()
	arrived := time.Now().Add(-time.Minute)
	for i, id := range ids {
		seq, err := stream.Put(id, "k", []byte("x"), arrived)
		if err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 { // a record after the checkpoint: a lag of about a minute
			if _, err := stream.Put(id, "k", []byte("y"), arrived); err != nil {
				t.Fatal(err)
			}
		}
		st := &par.ShardStatus{ID: id, Mux: &sync.RWMutex{}}
		s := stores[i%workers]
		if err := s.GetLease(st, s.WorkerID()); err != nil {
			t.Fatal(err)
		}
		st.SetCheckpoint(seq)
		if err := s.CheckpointSequence(st); err != nil {
			t.Fatal(err)
		}
	}
	kc := slowKinesis{stream.Client("status", nil, time.Now)}
	start := time.Now()
	rep := Read(context.Background(), slowTable{stores[0]}, kc, "status")
	took := time.Since(start)
	t.Logf("1,000 shards, 100 workers: %s (Kinesis round trip %s, Scan %s)", took.Round(time.Millisecond), kinesisRoundTrip, scanRoundTrip)
	if len(rep.Problems) > 0 {
		t.Fatalf("problems: %v", rep.Problems)
	}
	if len(rep.Shards) != shards || len(rep.Workers) != workers {
		t.Fatalf("%d shards and %d workers, want %d and %d", len(rep.Shards), len(rep.Workers), shards, workers)
	}
	for i, s := range rep.Shards {
		if s.Owner == "" || s.LagMillis == nil || s.Error != "" {
			t.Fatalf("shard %s: owner %q, lag %v, error %q", s.ShardID, s.Owner, s.LagMillis, s.Error)
		}
		if behind := *s.LagMillis > 30_000; behind != (i%10 == 0) {
			t.Fatalf("shard %s (#%d): lag %d ms", s.ShardID, i, *s.LagMillis)
		}
	}
	for _, w := range rep.Workers {
		if w.Leases != shards/workers {
			t.Fatalf("worker %s holds %d leases, want %d", w.Worker, w.Leases, shards/workers)
		}
	}
	if took > 2*time.Second {
		t.Fatalf("status took %s at 1,000 shards, want <= 2 s", took)
	}
}

// TestReadLagDeadline: when Kinesis is too slow for every lag within LagTimeout, Read still
// answers in time, the shards not read show no lag and no error, and one problem counts them.
func TestReadLagDeadline(t *testing.T) {
	stream := leasesim.NewStream("slow", 200)
	kc := verySlowKinesis{stream.Client("status", nil, time.Now)}
	tab := leasesim.NewTable("slow", checkpoint.AttrShardID)
	s, err := checkpoint.New(checkpoint.Config{Table: "slow", WorkerID: "w", FailoverTime: time.Minute}, tab.Client(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep := Read(context.Background(), s, kc, "slow")
	if took := time.Since(start); took > LagTimeout+time.Second {
		t.Fatalf("took %s, want about LagTimeout (%s)", took, LagTimeout)
	}
	unknown := 0
	for _, sh := range rep.Shards {
		if sh.Error != "" {
			t.Fatalf("shard %s: error %q, want none (not read in time is not an error of the shard)", sh.ShardID, sh.Error)
		}
		if sh.LagMillis == nil {
			unknown++
		}
	}
	if unknown == 0 || len(rep.Problems) != 1 {
		t.Fatalf("%d shards without lag, problems %v: want some, and one problem line", unknown, rep.Problems)
	}
	t.Log(rep.Problems[0])
}

// verySlowKinesis answers GetShardIterator in 600 ms: 200 shards, 64 at a time, take 2.4 s.
type verySlowKinesis struct{ KinesisReader }

func (k verySlowKinesis) GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	select {
	case <-time.After(600 * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return k.KinesisReader.GetShardIterator(ctx, in, opts...)
}
