package worker

import (
	"context"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/awsenv"
)

// kinesis returns the client the library gets: kc with one Initialize middleware, our seam on
// the library's Kinesis calls.
//
//   - ListShards is answered from a cache refreshed at most every worker.shard_sync_interval
//     (every page read with kc, merged into one answer; less often under a leader, see
//     shardListTTL). The library lists the stream on every pass of its event loop, and we run
//     that loop far more often than the shard sync interval (see kclConfig), so without the
//     cache each pass would cost a ListShards. Each refresh also hands the shard list, with
//     both parents of a merged shard (the library keeps only ParentShardId), to the lease
//     policy.
//   - A GetShardIterator of type LATEST for a child shard (it has a parent) is sent as
//     TRIM_HORIZON. The library asks for LATEST only for a shard without checkpoint when
//     worker.initial_position is LATEST; a child's records were all written after the split
//     or merge, while its parents drained, and must all be read.
func (g *leaseGuard) kinesis(kc *kinesis.Client) *kinesis.Client {
	c := &shardCache{src: kc, ttl: g.shardListTTL, onList: g.setShards, isChild: g.isChild}
	return kinesis.New(kc.Options(), func(o *kinesis.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Initialize.Add(middleware.InitializeMiddlewareFunc("recstreamLeaseSeam", c.handle), middleware.Before)
		})
	})
}

// shardCache is the state of the middleware kinesis installs.
type shardCache struct {
	src     *kinesis.Client // the caller's client, without this middleware
	ttl     func() time.Duration
	onList  func([]checkpoint.ShardInfo)
	isChild func(shardID string) bool

	mu     sync.Mutex
	stream string
	at     time.Time
	shards []ktypes.Shard
}

func (c *shardCache) handle(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (
	middleware.InitializeOutput, middleware.Metadata, error) {
	switch p := in.Parameters.(type) {
	case *kinesis.ListShardsInput:
		if p.StreamName != nil && p.NextToken == nil && p.ExclusiveStartShardId == nil && p.ShardFilter == nil &&
			p.StreamARN == nil && p.StreamCreationTimestamp == nil {
			shards, err := c.list(ctx, aws.ToString(p.StreamName))
			if err != nil {
				return middleware.InitializeOutput{}, middleware.Metadata{}, err
			}
			return middleware.InitializeOutput{Result: &kinesis.ListShardsOutput{Shards: shards}}, middleware.Metadata{}, nil
		}
	case *kinesis.GetShardIteratorInput:
		if p.ShardIteratorType == ktypes.ShardIteratorTypeLatest && c.isChild(aws.ToString(p.ShardId)) {
			cp := *p
			cp.ShardIteratorType = ktypes.ShardIteratorTypeTrimHorizon
			in.Parameters = &cp
		}
	}
	return next.HandleInitialize(ctx, in)
}

// list returns every shard of stream, from the cache when it is younger than ttl.
func (c *shardCache) list(ctx context.Context, stream string) ([]ktypes.Shard, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream == stream && time.Since(c.at) < c.ttl() {
		return append([]ktypes.Shard(nil), c.shards...), nil
	}
	shards, err := awsenv.ListShards(ctx, c.src, stream)
	if err != nil {
		return nil, err
	}
	info := make([]checkpoint.ShardInfo, 0, len(shards))
	for _, s := range shards {
		si := checkpoint.ShardInfo{ID: aws.ToString(s.ShardId)}
		for _, p := range []*string{s.ParentShardId, s.AdjacentParentShardId} {
			if aws.ToString(p) != "" {
				si.Parents = append(si.Parents, aws.ToString(p))
			}
		}
		info = append(info, si)
	}
	c.onList(info)
	c.stream, c.at, c.shards = stream, time.Now(), shards
	return append([]ktypes.Shard(nil), shards...), nil
}
