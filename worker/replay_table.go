package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	kcl "github.com/vmware/vmware-go-kcl-v2/clientlibrary/interfaces"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/icetable"
	"github.com/recstream/recstream/internal/objstore"
)

// TableReplay reports what a replay into the Iceberg table did.
type TableReplay struct {
	Shards []ShardReplay          `json:"shards"`
	Commit icetable.ReplaceReport `json:"commit"`
	// ErrorObjects: errors/ objects written after the commit; ErrorsDeleted: stale errors/
	// objects of the range deleted (records that are valid now, or filed under another cut).
	ErrorObjects  int64 `json:"error_objects"`
	ErrorsDeleted int64 `json:"errors_deleted"`
}

// TableReplayOptions configures ReplayTable.
type TableReplayOptions struct {
	// BeforeCommit, when set (tests), runs before each commit attempt (icetable.ReplaceOptions):
	// a crash there must leave the table (and errors/) as they were.
	BeforeCommit func(attempt int) error
}

// ReplayTable reprocesses the records of a time range into the Iceberg table: the range's
// records are replaced, in one commit, by their reprocessed versions (the new model's), so a
// reader at any snapshot sees every record of the range exactly once. The range is picked as
// Replay picks it for the Hive layout: per shard, from the start of the flush window holding
// req.From to the end of the one holding req.To, read from the stream, up to the fence — here
// the shard's position in the table when the replay starts (every record up to it is in the
// table; later ones are the live workers' to add, and their commits never hold a record of
// the range), or its live checkpoint (live, nil: none) where that is later. A record is named by its identity columns (shard_id, sequence_number,
// sub_sequence_number), so the range is found in the table whatever files hold it: the
// worker's flushes, or compacted files that also hold records outside the range, which are
// rewritten without them (copy-on-write, see icetable.Replace).
//
// Nothing is visible before the commit: the replacement files are PUT under names of the
// replay's own (orphans after a crash, for compact's cleanup), errors/ objects are held in
// memory and written after it, then the stale errors/ objects of the range (records valid now)
// are deleted. The commit carries every shard's position forward and is a compare-and-swap:
// a live worker's commit landing meanwhile makes it retry, and the worker's own CAS retries
// after the replay's.
func ReplayTable(ctx context.Context, cfg Config, stream string, deps Deps, kc *kinesis.Client, rep *icetable.Replace, live CheckpointReader, req ReplayRequest, o TableReplayOptions) (TableReplay, error) {
	var out TableReplay
	shards, err := replayStart(ctx, cfg, &deps, kc, stream, req)
	if err != nil {
		return out, err
	}
	tr := &tableReplay{rep: rep, errs: &deferredStore{Store: deps.Store}}
	// The fence: the shard's position in the table as the replay found it (flushes never end
	// inside a KPL aggregate, so it is a whole Kinesis record's), or the live checkpoint when
	// that is later: a flush of rejected records only commits nothing and checkpoints at once,
	// so between the two there are only records the table does not hold (errors/ does).
	fence := func(ctx context.Context, shardID string) (string, error) {
		pos := rep.Position(icetable.ShardKey{Stream: stream, Shard: shardID}).Seq
		if live == nil {
			return pos, nil
		}
		cp, err := live(ctx, shardID)
		if err != nil {
			return "", err
		}
		if cp == ShardEndCheckpoint || isDecimal(cp) && (pos == "" || seqAfter(cp, pos)) {
			return cp, nil
		}
		return pos, nil
	}
	for _, sh := range shards {
		r, err := replayShard(ctx, cfg, stream, deps, withHiddenAggregates(kc), fence, req, sh, tr)
		if err != nil {
			return out, fmt.Errorf("replay shard %s: %w", sh, err)
		}
		out.Shards = append(out.Shards, r)
	}
	if len(tr.ranges) == 0 {
		deps.Log.Info("replay: no record of the range in the table")
		return out, nil
	}
	if out.Commit, err = rep.Commit(ctx, tr.ranges, tr.files, icetable.ReplaceOptions{BeforeCommit: o.BeforeCommit}); err != nil {
		return out, err
	}
	// The table holds the new records: now errors/ follows (outside the table, so not atomic
	// with it; a crash here is repaired by a rerun, which rewrites the same keys).
	written := map[string]bool{}
	for _, k := range tr.errs.keys() {
		if err := deps.Store.Put(ctx, k, bytes.NewReader(tr.errs.held[k])); err != nil {
			return out, fmt.Errorf("write %s: %w", k, err)
		}
		written[k] = true
		out.ErrorObjects++
	}
	for _, s := range tr.stale {
		for _, key := range s.keys {
			if written[key] {
				continue
			}
			if err := deps.Store.Delete(ctx, key); err != nil {
				return out, fmt.Errorf("delete stale errors object %s: %w", key, err)
			}
			out.ErrorsDeleted++
			deps.Log.Info("deleted stale errors object", zap.String("s3_key", key), zap.String("shard_id", s.shard))
		}
	}
	return out, nil
}

// tableReplay gathers what the shards' replays produce for the one commit.
type tableReplay struct {
	rep    *icetable.Replace
	errs   *deferredStore
	ranges []icetable.Range
	files  []string
	stale  []staleErrors
}

type staleErrors struct {
	shard string
	keys  []string
}

// finishShard records a replayed shard's range, files and the errors/ objects stored for the
// range (deleted after the commit unless the replay rewrote them).
func (tr *tableReplay) finishShard(stream, shardID string, res ShardReplay, st *shardTable, live *liveObjects) {
	if res.FirstSeq == "" {
		return
	}
	tr.files = append(tr.files, st.files...)
	hours := make([]time.Time, 0, len(st.hours))
	for h := range st.hours {
		hours = append(hours, h)
	}
	sort.Slice(hours, func(i, j int) bool { return hours[i].Before(hours[j]) })
	tr.ranges = append(tr.ranges, icetable.Range{Shard: icetable.ShardKey{Stream: stream, Shard: shardID},
		First: icetable.Position{Seq: res.FirstSeq}, Last: icetable.Position{Seq: res.LastSeq, Sub: math.MaxInt64}, Hours: hours})
	s := staleErrors{shard: shardID}
	for _, m := range live.hours {
		for pos, keys := range m {
			if seqAfter(res.FirstSeq, pos.seq) || seqAfter(pos.seq, res.LastSeq) {
				continue
			}
			for _, k := range keys {
				if strings.HasPrefix(k, ErrorsPrefix+"/") {
					s.keys = append(s.keys, k)
				}
			}
		}
	}
	sort.Strings(s.keys)
	tr.stale = append(tr.stale, s)
}

// shardTable is the processor's Table during a table replay: data files are the replay's
// replacement files, the table's position is not consulted (every record of the range is
// rewritten), and a commit only records the files for the replay's one commit.
type shardTable struct {
	tr      *tableReplay
	files   []string
	hours   map[time.Time]bool
	flushes int64
}

func (s *shardTable) DataPath(hour time.Time, name string) string {
	return s.tr.rep.DataPath(hour, name)
}

func (s *shardTable) PutData(ctx context.Context, location string, body []byte) error {
	return s.tr.rep.PutData(ctx, location, body)
}

func (s *shardTable) Position(context.Context, icetable.ShardKey) (icetable.Position, error) {
	return icetable.Position{}, nil
}

// Submit notes the flush's files for the replay's one commit (ReplayTable): nothing to wait for.
func (s *shardTable) Submit(_ context.Context, r icetable.Request) <-chan error {
	s.files = append(s.files, r.Files...)
	s.flushes++
	return answered(nil)
}

// Hurry has nothing to hurry: Submit answered at once.
func (s *shardTable) Hurry(icetable.ShardKey) bool { return false }

// addHours notes the arrival hours of records taken: the partitions the range lives in.
func (s *shardTable) addHours(recs []ktypes.Record) {
	if s.hours == nil {
		s.hours = map[time.Time]bool{}
	}
	for _, r := range recs {
		if r.ApproximateArrivalTimestamp != nil {
			s.hours[aws.ToTime(r.ApproximateArrivalTimestamp).UTC().Truncate(time.Hour)] = true
		}
	}
}

// tableCheckpoints is the replay processor's checkpointer in a table replay: nothing to do
// (the live checkpoints are the live workers').
type tableCheckpoints struct{}

func (tableCheckpoints) Checkpoint(*string) error { return nil }

func (tableCheckpoints) PrepareCheckpoint(*string) (kcl.IPreparedCheckpointer, error) {
	return nil, errors.New("replay: not supported")
}

// deferredStore holds the objects put through it (errors/ objects: small, gzip) until the
// table commit lands; reads, lists and deletes go to the store.
type deferredStore struct {
	objstore.Store
	mu   sync.Mutex
	held map[string][]byte
}

func (d *deferredStore) Put(_ context.Context, key string, body io.Reader) error {
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.held == nil {
		d.held = map[string][]byte{}
	}
	d.held[key] = b
	return nil
}

func (d *deferredStore) keys() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	ks := make([]string, 0, len(d.held))
	for k := range d.held {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
