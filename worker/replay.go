package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/objstore"
)

// ReplayRequest is a time range to reprocess.
type ReplayRequest struct {
	// From: the replay starts at the beginning of the flush window containing From, which is
	// where an object starts, so the objects it writes have the keys the live worker wrote.
	From time.Time
	// To (zero: no bound): the replay ends with the flush window containing To.
	To time.Time
	// Shards limits the replay to these shard ids (nil: every shard of the stream).
	Shards []string
}

// CheckpointReader returns a shard's checkpoint in the live lease table ("" when it has none,
// "SHARD_END" when the shard is finished).
type CheckpointReader func(ctx context.Context, shardID string) (string, error)

// ShardReplay reports what a replay did on one shard.
type ShardReplay struct {
	ShardID  string `json:"shard_id"`
	Records  int64  `json:"records"`   // user records rewritten (valid and rejected)
	Objects  int64  `json:"objects"`   // objects written (output and errors/)
	FirstSeq string `json:"first_seq"` // first record replayed
	LastSeq  string `json:"last_seq"`  // last record replayed
	// Stop says why the replay of this shard ended: "to" (a record past the range), "fence"
	// (the live checkpoint: later records are the live worker's to write), "shard_end",
	// "no_records", or "not_processed" (the live worker has no checkpoint there yet).
	Stop string `json:"stop"`
}

// Replay reprocesses the records of a time range and rewrites, in place, exactly the objects
// the live worker wrote for them (same keys; the same bytes unless the model changed, which is
// the point of a replay after a bad model). It needs no lease: it only rewrites flush windows
// that the live worker has already checkpointed past (the fence: each shard's checkpoint in
// the live lease table), so it never races the live worker's writes and never moves its
// checkpoint. Object boundaries are a function of the stream and the flush config (see
// buffer), so cfg.Flush must be the live worker's.
func Replay(ctx context.Context, cfg Config, stream string, deps Deps, kc *kinesis.Client, fence CheckpointReader, req ReplayRequest) ([]ShardReplay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("replay: worker config: %w", err)
	}
	if req.From.IsZero() || !req.To.IsZero() && req.To.Before(req.From) {
		return nil, errors.New("replay: want --from, and --to not before it")
	}
	if deps.Metrics == nil {
		deps.Metrics, _ = NewMetrics(nil)
	}
	shards, err := listShards(ctx, kc, stream)
	if err != nil {
		return nil, err
	}
	var out []ShardReplay
	for _, sh := range shards {
		if len(req.Shards) > 0 && !slices.Contains(req.Shards, sh) {
			continue
		}
		r, err := replayShard(ctx, cfg, stream, deps, withHiddenAggregates(kc), fence, req, sh)
		if err != nil {
			return out, fmt.Errorf("replay shard %s: %w", sh, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func listShards(ctx context.Context, kc *kinesis.Client, stream string) ([]string, error) {
	shards, err := awsenv.ListShards(ctx, kc, stream)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(shards))
	for i, s := range shards {
		ids[i] = aws.ToString(s.ShardId)
	}
	return ids, nil
}

// replayLease lets the replay's writes through: it holds no lease and needs none (the fence
// keeps it behind the live worker).
type replayLease struct{}

func (replayLease) HeldUntil(string) (time.Time, bool) { return time.Now().Add(time.Hour), true }

// replayCheckpointer writes nothing: the live checkpoint is the live worker's.
type replayCheckpointer struct{ flushes *int64 }

func (c replayCheckpointer) Checkpoint(*string) error { *c.flushes++; return nil }
func (replayCheckpointer) PrepareCheckpoint(*string) (kcl.IPreparedCheckpointer, error) {
	return nil, errors.New("replay: not supported")
}

func replayShard(ctx context.Context, cfg Config, stream string, deps Deps, kc *kinesis.Client, fence CheckpointReader, req ReplayRequest, shardID string) (ShardReplay, error) {
	res := ShardReplay{ShardID: shardID}
	log := deps.Log.With(zap.String("component", "replay"), zap.String("stream", stream), zap.String("shard_id", shardID))
	limit, err := fence(ctx, shardID)
	if err != nil {
		return res, fmt.Errorf("read the live checkpoint: %w", err)
	}
	if limit == "" {
		res.Stop = "not_processed"
		log.Info("shard not processed by the live worker yet: nothing to replay")
		return res, nil
	}
	// The processor cuts objects exactly as the live worker does.
	store := &countingStore{Store: deps.Store}
	deps.Store = store
	var stopping atomic.Bool
	s := &shared{cfg: cfg, stream: stream, deps: deps, lease: replayLease{}, ctx: ctx, stopping: &stopping, live: map[string]*processor{}}
	p := s.CreateProcessor().(*processor)
	p.Initialize(&kcl.InitializationInput{ShardId: shardID, ExtendedSequenceNumber: &kcl.ExtendedSequenceNumber{}})
	defer p.release()
	var flushes int64
	cp := replayCheckpointer{flushes: &flushes}
	start := time.Unix(0, p.buf.windowOf(req.From)*int64(cfg.Flush.MaxAge))
	toWindow := int64(-1)
	if !req.To.IsZero() {
		toWindow = p.buf.windowOf(req.To)
	}
	it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(stream), ShardId: aws.String(shardID),
		ShardIteratorType: ktypes.ShardIteratorTypeAtTimestamp, Timestamp: aws.Time(start)})
	if err != nil {
		return res, fmt.Errorf("shard iterator at %s: %w", start.Format(time.RFC3339Nano), err)
	}
	iter := it.ShardIterator
	finish := func(stop string) (ShardReplay, error) {
		res.Stop = stop
		if !p.buf.empty() && !p.flush(cp) {
			return res, errors.New("flush failed (see the log)")
		}
		if p.state == stateDead {
			return res, errors.New("replay processor gave up (see the log)")
		}
		res.Objects = store.n.Load()
		log.Info("shard replayed", zap.String("stop", stop), zap.Int64("records", res.Records), zap.Int64("flushes", flushes),
			zap.String("seq_first", res.FirstSeq), zap.String("seq_last", res.LastSeq))
		return res, nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		page, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(int32(cfg.MaxRecords))})
		if err != nil {
			var thr *ktypes.ProvisionedThroughputExceededException
			if errors.As(err, &thr) {
				if !sleepCtx(ctx, time.Second) {
					return res, ctx.Err()
				}
				continue
			}
			return res, fmt.Errorf("get records: %w", err)
		}
		take, stop := page.Records, ""
		for i, r := range page.Records {
			seq := aws.ToString(r.SequenceNumber)
			if limit != ShardEndCheckpoint && seqAfter(seq, limit) {
				take, stop = page.Records[:i], "fence"
				break
			}
			// A record without an arrival time has no window: it is taken, and goes to errors/.
			if toWindow >= 0 && r.ApproximateArrivalTimestamp != nil && p.buf.windowOf(*r.ApproximateArrivalTimestamp) > toWindow {
				take, stop = page.Records[:i], "to"
				break
			}
		}
		if len(take) > 0 {
			if res.FirstSeq == "" {
				res.FirstSeq = aws.ToString(take[0].SequenceNumber)
			}
			res.LastSeq = aws.ToString(take[len(take)-1].SequenceNumber)
			res.Records += int64(userRecordCount(take, aggregateLimit(cfg.Flush)))
			p.ProcessRecords(&kcl.ProcessRecordsInput{Records: take, Checkpointer: cp, MillisBehindLatest: aws.ToInt64(page.MillisBehindLatest)})
			if p.state != stateActive {
				return res, errors.New("replay processor stopped (see the log)")
			}
		}
		switch {
		case stop != "":
			return finish(stop)
		case res.LastSeq != "" && res.LastSeq == limit:
			// The live checkpoint, a flush boundary: everything after it is the live worker's.
			return finish("fence")
		case page.NextShardIterator == nil:
			return finish("shard_end")
		case len(page.Records) == 0 && aws.ToInt64(page.MillisBehindLatest) == 0:
			// At the tip without reaching the fence: the live checkpoint is not in this range.
			if res.FirstSeq == "" {
				return finish("no_records")
			}
			return finish("fence")
		}
		iter = page.NextShardIterator
		if len(page.Records) == 0 && !sleepCtx(ctx, cfg.IdleTimeBetweenReads) {
			return res, ctx.Err()
		}
	}
}

// countingStore counts the objects written through it.
type countingStore struct {
	objstore.Store
	n atomic.Int64
}

func (c *countingStore) Put(ctx context.Context, key string, body io.Reader) error {
	err := c.Store.Put(ctx, key, body)
	if err == nil {
		c.n.Add(1)
	}
	return err
}

// ShardEndCheckpoint is the checkpoint of a finished shard.
const ShardEndCheckpoint = "SHARD_END"

// seqAfter reports whether sequence number a is after b (decimal strings of any length).
func seqAfter(a, b string) bool {
	x, okx := new(big.Int).SetString(a, 10)
	y, oky := new(big.Int).SetString(b, 10)
	if !okx || !oky {
		return a > b
	}
	return x.Cmp(y) > 0
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
