package etl

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/recstream/recstream/batch/dataset"
)

// publishIfComplete publishes the run once every shard of it is in: under the publish lock,
// it merges the shard manifests (just shard for an unsharded run), writes the manifest and
// cleans up. A shard that is not the last one to finish leaves the publish to that one.
func (j *Job) publishIfComplete(ctx context.Context, conn *sql.Conn, pubLock string, shard *dataset.Manifest, start time.Time, res *Result) error {
	// Publishing is serialised across shards and runs of this dataset.
	got, err := getLock(ctx, conn, pubLock, max(j.cfg.LockTimeout, 2*time.Minute))
	if err != nil {
		return err
	}
	if !got {
		return &LockedError{Lock: pubLock, Holder: describeHolder(ctx, conn, j.store, pubLock)}
	}
	defer releaseLock(context.WithoutCancel(ctx), conn, pubLock)

	shards := []*dataset.Manifest{shard}
	if j.sharded() {
		shards, err = j.shardManifests(ctx)
		if err != nil {
			return err
		}
		if len(shards) < j.opts.Shards {
			res.Duration = time.Since(start)
			j.log.Debug("shard exported; publish waits for the other shards", zap.String("run_id", j.opts.RunID), zap.Int("shards_done", len(shards)), zap.Int("shards", j.opts.Shards))
			return nil
		}
	}
	m, prev, err := j.publish(ctx, shards)
	if err != nil {
		return err
	}
	res.Published, res.Manifest, res.Removed = true, m, m.RemovedPartitions
	if j.afterPublish != nil {
		j.afterPublish()
	}
	res.Deleted, err = j.cleanup(ctx, m, prev)
	res.Duration = time.Since(start)
	if err != nil {
		// The dataset is published and consistent; leftovers go on the next run.
		return fmt.Errorf("published run %s; cleanup: %w", j.opts.RunID, err)
	}
	return nil
}

// shardManifests reads the finished shard manifests of this run.
func (j *Job) shardManifests(ctx context.Context) ([]*dataset.Manifest, error) {
	objs, err := j.store.List(ctx, runsPrefix(j.opts.RunID))
	if err != nil {
		return nil, fmt.Errorf("list shard manifests: %w", err)
	}
	suffix := "-of-" + strconv.Itoa(j.opts.Shards) + ".json"
	seen := map[int]bool{}
	var out []*dataset.Manifest
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, suffix) {
			continue
		}
		m, err := dataset.ReadManifestAt(ctx, j.store, o.Key)
		if err != nil {
			return nil, err
		}
		if m.RunID != j.opts.RunID || m.Shards != j.opts.Shards || len(m.ShardsCovered) != 1 || seen[m.ShardsCovered[0]] {
			return nil, fmt.Errorf("shard manifest %s: does not belong to run %s with %d shards", j.store.URL(o.Key), j.opts.RunID, j.opts.Shards)
		}
		seen[m.ShardsCovered[0]] = true
		out = append(out, m)
	}
	return out, nil
}

// publish writes the manifest of the shards' partitions: the dataset becomes exactly the
// source's current join. A partition of the previous dataset is carried over only if its
// customer's hash slice (ShardOf under this run's shard count) is not one this run covered; a
// run publishes once all its shards are in, so it covers every slice and nothing is carried
// over. The previous partitions that are neither rewritten nor carried over, customers the
// source no longer has, are counted as removed; cleanup deletes their files.
func (j *Job) publish(ctx context.Context, shards []*dataset.Manifest) (m, prev *dataset.Manifest, err error) {
	m = dataset.NewManifest(j.opts.RunID, j.opts.Shards)
	m.StartedAt = shards[0].StartedAt
	rewritten := map[int]bool{}
	covered := map[int]bool{}
	for _, s := range shards {
		m.ShardsCovered = append(m.ShardsCovered, s.ShardsCovered...)
		for _, c := range s.ShardsCovered {
			covered[c] = true
		}
		m.SourceRows += s.SourceRows
		m.RunRows += s.RunRows
		for k, v := range s.Rejected {
			m.Rejected[k] += v
		}
		if s.StartedAt.Before(m.StartedAt) {
			m.StartedAt = s.StartedAt
		}
		for _, p := range s.Partitions {
			rewritten[p.CustomerNumber] = true
			m.Partitions = append(m.Partitions, p)
		}
	}
	prev, err = dataset.ReadManifest(ctx, j.store)
	if err != nil && !errors.Is(err, dataset.ErrNoDataset) {
		return nil, nil, err
	}
	if prev != nil {
		for _, p := range prev.Partitions {
			switch {
			case rewritten[p.CustomerNumber]:
			case !covered[ShardOf(p.CustomerNumber, j.opts.Shards)]:
				m.Partitions = append(m.Partitions, p)
			default:
				m.RemovedPartitions++
				m.RemovedRows += p.Rows
			}
		}
	}
	sort.Ints(m.ShardsCovered)
	sort.Slice(m.Partitions, func(i, j int) bool { return m.Partitions[i].CustomerNumber < m.Partitions[j].CustomerNumber })
	for _, p := range m.Partitions {
		m.Rows += p.Rows
	}
	m.FinishedAt = j.now().UTC()
	b, err := json.Marshal(m)
	if err != nil {
		return nil, nil, fmt.Errorf("encode manifest: %w", err)
	}
	if err := j.store.Put(ctx, dataset.ManifestKey, bytes.NewReader(b)); err != nil {
		return nil, nil, fmt.Errorf("publish manifest: %w", err)
	}
	j.log.Debug("published dataset", zap.String("run_id", m.RunID), zap.Int("partitions", len(m.Partitions)), zap.Int64("rows", m.Rows),
		zap.Int("removed_partitions", m.RemovedPartitions), zap.String("s3_key", j.store.URL(dataset.ManifestKey)))
	return m, prev, nil
}

// cleanup deletes, after m is published, the data files m no longer references. Usually that
// is the previous manifest's files of the partitions this run rewrote or removed, known
// without listing.
// When a run marker of another run is left over (a run that died, or a sharded run older than
// orphan_grace), it also lists the dataset and deletes every unreferenced file except those of
// sharded runs still within their grace period (they may be running). Then it removes the
// staging objects of this run and of the dead runs.
func (j *Job) cleanup(ctx context.Context, m, prev *dataset.Manifest) (int, error) {
	live := map[string]bool{}
	for _, p := range m.Partitions {
		for _, f := range p.Files {
			live[f.Key] = true
		}
	}
	runObjs, err := j.store.List(ctx, runsRoot)
	if err != nil {
		return 0, fmt.Errorf("list run markers: %w", err)
	}
	cutoff := j.now().Add(-j.cfg.OrphanGrace)
	type stagedRun struct {
		keys    []string
		fresh   bool // a marker younger than orphan_grace
		sharded bool
	}
	runs := map[string]*stagedRun{}
	for _, o := range runObjs {
		rest := strings.TrimPrefix(o.Key, runsRoot)
		rid, name, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		r := runs[rid]
		if r == nil {
			r = &stagedRun{}
			runs[rid] = r
		}
		r.keys = append(r.keys, o.Key)
		r.fresh = r.fresh || o.Modified.After(cutoff)
		r.sharded = r.sharded || !strings.Contains(name, "-of-1.")
	}
	// Unsharded runs never overlap (they share one lock, which we hold), so another unsharded
	// run's marker is always a dead run's.
	alive := func(rid string) bool {
		r := runs[rid]
		return rid != m.RunID && r != nil && r.sharded && r.fresh
	}
	dead := 0
	for rid := range runs {
		if rid != m.RunID && !alive(rid) {
			dead++
		}
	}
	var doomed []string
	if dead > 0 {
		objs, err := j.store.List(ctx, dataset.Prefix+"/"+dataset.PartitionColumn+"=")
		if err != nil {
			return 0, fmt.Errorf("list dataset: %w", err)
		}
		for _, o := range objs {
			if rid := fileRunID(o.Key); rid != "" && !live[o.Key] && !alive(rid) {
				doomed = append(doomed, o.Key)
			}
		}
	} else if prev != nil {
		for _, p := range prev.Partitions {
			for _, f := range p.Files {
				if !live[f.Key] {
					doomed = append(doomed, f.Key)
				}
			}
		}
	}
	// Data files before markers: if cleanup stops halfway, the markers make the next run
	// list and finish the job.
	n, err := j.deleteAll(ctx, doomed)
	if err != nil {
		return n, err
	}
	var staging []string
	for rid, r := range runs {
		if !alive(rid) {
			staging = append(staging, r.keys...)
		}
	}
	if _, err := j.deleteAll(ctx, staging); err != nil {
		return n, err
	}
	return n, nil
}

// deleteAll deletes keys with upload_concurrency deletes in flight and returns how many went.
func (j *Job) deleteAll(ctx context.Context, keys []string) (int, error) {
	var mu sync.Mutex
	n := 0
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(j.cfg.UploadConcurrency)
	for _, k := range keys {
		g.Go(func() error {
			if err := j.store.Delete(gctx, k); err != nil {
				return err
			}
			mu.Lock()
			n++
			mu.Unlock()
			return nil
		})
	}
	err := g.Wait()
	return n, err
}
