package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/stacktest"
)

// blockingRecommender fails like an outage while blocked is set, counting the calls.
type blockingRecommender struct {
	blocked atomic.Bool
	calls   atomic.Int64
}

func (b *blockingRecommender) Recommend(ctx context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error) {
	b.calls.Add(1)
	if b.blocked.Load() {
		return Recommendations{}, errors.New("database unavailable")
	}
	return fakeRecommender{}.Recommend(ctx, users, anchors, k)
}

// lastPageLikeAWS makes a kinesalite GetRecords page behave like Kinesis at the end of a closed
// shard: Kinesis returns the shard's last records together with a null NextShardIterator,
// kinesalite returns them with an iterator and the end on a further, empty page. The
// middleware looks one page ahead with plain (a client without it) and merges the two.
func lastPageLikeAWS(plain *kinesis.Client) func(*middleware.Stack) error {
	return func(stack *middleware.Stack) error {
		return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("test.LastPageLikeAWS",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				out, md, err := next.HandleInitialize(ctx, in)
				page, ok := out.Result.(*kinesis.GetRecordsOutput)
				if err != nil || !ok || len(page.Records) == 0 || page.NextShardIterator == nil {
					return out, md, err
				}
				ahead, aerr := plain.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: page.NextShardIterator})
				if aerr == nil && len(ahead.Records) == 0 && ahead.NextShardIterator == nil {
					page.NextShardIterator = nil
				}
				return out, md, err
			}), middleware.Before)
	}
}

// TestSplitDuringShutdownKeepsParentOpen: a closed parent's last batch (its records and the
// end of the shard come in one GetRecords page) is being retried when SIGTERM arrives. The
// processor takes nothing, so it must not write SHARD_END (that would skip the batch for
// good); the next worker reads the batch, writes it once and ends the shard.
func TestSplitDuringShutdownKeepsParentOpen(t *testing.T) {
	e := newTestEnv(t, 1)
	const parent = "shardId-000000000000"
	ctx := context.Background()
	batch := make([][]byte, 50)
	for i := range batch {
		batch[i] = event(i, "q")
	}
	e.put(t, batch)
	if _, err := e.kc.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(e.Stream), ShardToSplit: aws.String(parent),
		NewStartingHashKey: aws.String("170141183460469231731687303715884105728")}); err != nil {
		t.Fatalf("split shard: %v", err)
	}
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		out, err := e.kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(e.Stream)})
		return err == nil && out.StreamDescriptionSummary.StreamStatus == ktypes.StreamStatusActive
	}, "split did not finish")
	after := make([][]byte, 50)
	for i := range after {
		after[i] = event(50+i, "q")
	}
	e.put(t, after)

	rec := &blockingRecommender{}
	rec.blocked.Store(true)
	plain := e.kc
	e.kc = kinesis.New(plain.Options(), func(o *kinesis.Options) { o.APIOptions = append(o.APIOptions, lastPageLikeAWS(plain)) })
	r := start(e.newWorker(t, "w1", testLogger(t), rec))
	// The parent's only page (records, then the end of the shard) is being retried.
	stacktest.Eventually(t, 60*time.Second, 50*time.Millisecond, func() bool { return rec.calls.Load() >= 3 },
		"the worker never retried the parent's batch")
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	observer, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: "observer", FailoverTime: e.Cfg.FailoverTime}, e.db)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := observer.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.ShardID == parent && l.Checkpoint == checkpoint.ShardEnd {
			t.Fatalf("parent ended (SHARD_END) by a processor that took none of its last batch")
		}
	}
	if o := e.read(t); len(o.count) != 0 {
		t.Fatalf("%d records written while the recommender was down", len(o.count))
	}

	rec.blocked.Store(false)
	r = start(e.newWorker(t, "w2", testLogger(t), rec))
	e.waitExactlyOnce(t, "q", 100, 120*time.Second)
	stacktest.Eventually(t, 30*time.Second, 250*time.Millisecond, func() bool {
		ls, err := observer.ListLeases(ctx)
		if err != nil {
			return false
		}
		for _, l := range ls {
			if l.ShardID == parent {
				return l.Checkpoint == checkpoint.ShardEnd
			}
		}
		return false
	}, "the next worker did not end the parent")
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
