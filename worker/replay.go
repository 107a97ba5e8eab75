package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"
	"sync"
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
	ShardID string `json:"shard_id"`
	Records int64  `json:"records"` // user records rewritten (valid and rejected)
	Objects int64  `json:"objects"` // objects written (output and errors/)
	Deleted int64  `json:"deleted"` // stale objects deleted (see Replay)
	// LateCuts counts objects started inside a flush window because a stored object starts
	// there: the live worker closed the window at the tip before late records of it (or ran
	// with other flush limits).
	LateCuts int64  `json:"late_cuts"`
	FirstSeq string `json:"first_seq"` // first record replayed
	LastSeq  string `json:"last_seq"`  // last record replayed
	// Stop says why the replay of this shard ended: "to" (a record past the range), "fence"
	// (the live checkpoint: later records are the live worker's to write), "shard_end",
	// "no_records", or "not_processed" (the live worker has no checkpoint there yet).
	Stop string `json:"stop"`
}

// replayStart is what both replays (Hive objects, the Iceberg table) check and set up first:
// the config, the range, the default metrics and logger, and the shards of req (every shard
// of the stream when it names none).
func replayStart(ctx context.Context, cfg Config, deps *Deps, kc *kinesis.Client, stream string, req ReplayRequest) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("replay: %w", configError("worker", err))
	}
	if req.From.IsZero() || !req.To.IsZero() && req.To.Before(req.From) {
		return nil, errors.New("replay: want --from, and --to not before it")
	}
	if deps.Metrics == nil {
		deps.Metrics, _ = NewMetrics(nil)
	}
	if deps.Log == nil {
		deps.Log = zap.NewNop()
	}
	shards, err := listShards(ctx, kc, stream)
	if err != nil {
		return nil, err
	}
	if len(req.Shards) > 0 {
		shards = slices.DeleteFunc(shards, func(sh string) bool { return !slices.Contains(req.Shards, sh) })
	}
	return shards, nil
}

// Replay reprocesses the records of a time range and rewrites, in place, exactly the objects
// the live worker wrote for them (same keys; the same bytes unless the model changed, which is
// the point of a replay after a bad model). It needs no lease: it only rewrites flush windows
// that the live worker has already checkpointed past (the fence: each shard's checkpoint in
// the live lease table, read once when the shard's replay starts), so it never races the live
// worker's writes and never moves its checkpoint.
//
// Object boundaries are a function of the stream and the flush config (see buffer), except
// one the clock decides: the live worker closes a window at the stream's tip, and a record of
// that window readable only later (slow propagation, clock skew) starts an object of its own.
// So the replay lists the shard's objects in every hour it reaches and also cuts before each
// record that starts one of them, which rebuilds the live worker's flushes exactly. cfg.Flush
// must still be the live worker's (the listed keys do not say where a count or size limit
// cut).
//
// For every flush it redoes, the replay writes its output and errors/ objects and then deletes
// the object stored under that flush's other key when the flush no longer has records for it
// (a record that failed enrichment and now succeeds leaves errors/; a flush whose records are
// all rejected now loses its output object), so no record stays under two keys.
func Replay(ctx context.Context, cfg Config, stream string, deps Deps, kc *kinesis.Client, fence CheckpointReader, req ReplayRequest) ([]ShardReplay, error) {
	shards, err := replayStart(ctx, cfg, &deps, kc, stream, req)
	if err != nil {
		return nil, err
	}
	var out []ShardReplay
	for _, sh := range shards {
		r, err := replayShard(ctx, cfg, stream, deps, withHiddenAggregates(kc), fence, req, sh, nil)
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

// liveObjects indexes the objects already stored for one shard by hour partition, listed
// lazily (once per hour the replay reaches): each names the first record of one of the live
// worker's flushes in that hour.
type liveObjects struct {
	store         objstore.Store
	stream, shard string
	hours         map[time.Time]map[objectPos][]string // hour → position → keys (output and errors/)
}

// at returns the index of the hour partition of t.
func (l *liveObjects) at(ctx context.Context, t time.Time) (map[objectPos][]string, error) {
	hour := t.UTC().Truncate(time.Hour)
	if m, ok := l.hours[hour]; ok {
		return m, nil
	}
	m := map[objectPos][]string{}
	out, errs := shardHourPrefixes(l.stream, l.shard, hour)
	for _, prefix := range []string{out, errs} {
		objs, err := l.store.List(ctx, prefix)
		if err != nil {
			return nil, fmt.Errorf("list the stored objects of the shard: %w", err)
		}
		for _, o := range objs {
			if pos, ok := parseObjectPos(strings.TrimPrefix(o.Key, prefix)); ok {
				m[pos] = append(m[pos], o.Key)
			}
		}
	}
	l.hours[hour] = m
	return m, nil
}

// replayFlushes is the replay's checkpointer. It writes no checkpoint (the live checkpoint is
// the live worker's); the processor calls it after each flush's objects are stored and before
// its buffer is reset, which is where the replay deletes the stored objects of that flush it
// did not rewrite: same position (key name) in the same hour, under the other prefix (output
// or errors/) or another format's extension. Deleting after the writes means a reader may
// briefly see a record twice, never miss one.
type replayFlushes struct {
	ctx     context.Context
	p       *processor
	store   *countingStore
	live    *liveObjects
	log     *zap.Logger
	flushes int64
	deleted int64
}

func (c *replayFlushes) Checkpoint(*string) error {
	for _, h := range c.p.buf.heads {
		m, err := c.live.at(c.ctx, h.hour)
		if err != nil {
			return err
		}
		pos := objectPos{seq: h.seq, sub: h.sub}
		var kept []string
		for _, key := range m[pos] {
			if c.store.wrote(key) {
				kept = append(kept, key)
				continue
			}
			if err := c.store.Delete(c.ctx, key); err != nil {
				return fmt.Errorf("delete stale object: %w", err)
			}
			c.deleted++
			c.log.Info("deleted stale object", zap.String("s3_key", key), zap.String("sequence_number", h.seq))
		}
		// Forget what is gone, so a retried call neither deletes nor counts it again.
		m[pos] = kept
	}
	c.store.reset()
	c.flushes++
	return nil
}

func (*replayFlushes) PrepareCheckpoint(*string) (kcl.IPreparedCheckpointer, error) {
	return nil, errors.New("replay: not supported")
}

// replayShard replays one shard into the Hive layout, or, with tr, into the replacement files
// of an Iceberg table replay (see ReplayTable).
func replayShard(ctx context.Context, cfg Config, stream string, deps Deps, kc *kinesis.Client, fence CheckpointReader, req ReplayRequest, shardID string, tr *tableReplay) (ShardReplay, error) {
	res := ShardReplay{ShardID: shardID}
	log := deps.Log.With(zap.String("component", "replay"), zap.String("stream", stream), zap.String("shard_id", shardID))
	limit, err := fence(ctx, shardID)
	if err != nil {
		return res, fmt.Errorf("read the live checkpoint: %w", err)
	}
	if limit != ShardEndCheckpoint && !isDecimal(limit) {
		// No checkpoint, or a position rather than a sequence number (TRIM_HORIZON, LATEST):
		// the live worker has made nothing of this shard durable, so nothing is fenced off.
		res.Stop = "not_processed"
		log.Info("shard not processed by the live worker yet: nothing to replay", zap.String("checkpoint", limit))
		return res, nil
	}
	// The processor cuts objects exactly as the live worker does.
	store := &countingStore{Store: deps.Store}
	var st *shardTable
	if tr != nil {
		// Table replay: data files go to the replay's replacement files, errors/ objects are
		// held until the table commit lands (see ReplayTable).
		st = &shardTable{tr: tr}
		deps.Table = st
		store.Store = tr.errs
	}
	deps.Store = store
	var stopping atomic.Bool
	s := &shared{cfg: cfg, stream: stream, deps: deps, lease: replayLease{}, ctx: ctx, stopping: &stopping, live: map[string]*processor{}}
	p := s.CreateProcessor().(*processor)
	p.Initialize(&kcl.InitializationInput{ShardId: shardID, ExtendedSequenceNumber: &kcl.ExtendedSequenceNumber{}})
	defer p.release()
	live := &liveObjects{store: deps.Store, stream: stream, shard: shardID, hours: map[time.Time]map[objectPos][]string{}}
	hive := &replayFlushes{ctx: ctx, p: p, store: store, live: live, log: log}
	var cp kcl.IRecordProcessorCheckpointer = hive
	if tr != nil {
		cp = tableCheckpoints{}
	}
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
	// process hands records to the processor, flushing first before each record that starts a
	// stored object: the live worker cut there (by the data, or at the tip before a late
	// record), so the replay rewrites the same keys and no record ends up under two.
	process := func(recs []ktypes.Record, millisBehind int64) error {
		give := func(recs []ktypes.Record) error {
			if len(recs) == 0 {
				return nil
			}
			p.ProcessRecords(&kcl.ProcessRecordsInput{Records: recs, Checkpointer: cp, MillisBehindLatest: millisBehind})
			if p.state != stateActive {
				return errors.New("replay processor stopped (see the log)")
			}
			return nil
		}
		from := 0
		for i, r := range recs {
			if r.ApproximateArrivalTimestamp == nil {
				continue // filed like the live worker files it (see fileUntimed): never the start of a cut
			}
			seq, arrival := aws.ToString(r.SequenceNumber), aws.ToTime(r.ApproximateArrivalTimestamp)
			stored, err := live.at(ctx, arrival)
			if err != nil {
				return err
			}
			if _, ok := stored[objectPos{seq: seq}]; !ok {
				continue
			}
			if err := give(recs[from:i]); err != nil {
				return err
			}
			from = i
			if p.buf.empty() {
				continue
			}
			if p.buf.windowOf(arrival) <= p.buf.window {
				// Not a window boundary: the live worker closed this window at the tip before
				// this record could be read (or cut by other flush limits).
				res.LateCuts++
				log.Info("cutting inside a window where a stored object starts", zap.String("sequence_number", seq),
					zap.Time("arrival", arrival))
			}
			if !p.flush(cp) {
				return errors.New("flush failed (see the log)")
			}
		}
		return give(recs[from:])
	}
	finish := func(stop string) (ShardReplay, error) {
		res.Stop = stop
		if !p.buf.empty() && !p.flush(cp) {
			return res, errors.New("flush failed (see the log)")
		}
		if tr != nil && !p.settle(settleBlock) {
			return res, errors.New("replay processor gave up (see the log)")
		}
		if p.state == stateDead {
			return res, errors.New("replay processor gave up (see the log)")
		}
		res.Objects = store.n.Load()
		res.Deleted = hive.deleted
		flushes := hive.flushes
		if st != nil {
			res.Objects += int64(len(st.files))
			flushes = st.flushes
			tr.finishShard(stream, shardID, res, st, live)
		}
		log.Info("shard replayed", zap.String("stop", stop), zap.Int64("records", res.Records), zap.Int64("flushes", flushes),
			zap.Int64("objects", res.Objects), zap.Int64("deleted", res.Deleted), zap.Int64("late_cuts", res.LateCuts),
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
			if st != nil {
				st.addHours(take)
			}
			res.Records += int64(userRecordCount(take, aggregateLimit(cfg.Flush)))
			if err := process(take, aws.ToInt64(page.MillisBehindLatest)); err != nil {
				return res, err
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

// countingStore counts the objects written through it, and remembers the keys written since
// the last reset (one flush's).
type countingStore struct {
	objstore.Store
	n   atomic.Int64
	mu  sync.Mutex
	put map[string]bool
}

func (c *countingStore) Put(ctx context.Context, key string, body io.Reader) error {
	err := c.Store.Put(ctx, key, body)
	if err == nil {
		c.n.Add(1)
		c.mu.Lock()
		if c.put == nil {
			c.put = map[string]bool{}
		}
		c.put[key] = true
		c.mu.Unlock()
	}
	return err
}

func (c *countingStore) wrote(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.put[key]
}

func (c *countingStore) reset() {
	c.mu.Lock()
	clear(c.put)
	c.mu.Unlock()
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
