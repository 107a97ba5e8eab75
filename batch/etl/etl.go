// Package etl is `recstream batch etl`: it exports the source's ratings ⋈ products ⋈
// customers to Hive-partitioned Snappy Parquet and publishes them atomically through the
// training dataset's manifest (package dataset). A run reads top-down:
//
//   - Run (this file) takes the shard's lock (lock.go), then exports and publishes;
//   - the source (source.go) streams the shard's ratings merge-joined with customers and
//     products;
//   - the writer (writer.go) turns them into partition files that the uploads (upload.go)
//     store;
//   - publish (publish.go) writes the manifest once every shard of the run is in, then cleans
//     up replaced, removed and orphaned files.
//
// Plan (plan.go) is the dry run; keys.go names the objects a run writes.
package etl

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/internal/objstore"
)

// Config is what the ETL takes from the `batch` config section.
type Config struct {
	// LockTimeout is how long a run waits for the run lock before giving up (0: do not wait).
	LockTimeout time.Duration
	// RowGroupRows bounds a Parquet row group (and so the ETL's memory per open partition).
	// The ETL also starts a new file in a partition after this many rows, so one file is one
	// row group and memory stays bounded however many ratings one customer has.
	RowGroupRows int
	// UploadConcurrency is how many finished Parquet files a run uploads at once.
	UploadConcurrency int
	// OrphanGrace protects the files of an unfinished sharded run (n > 1) from orphan cleanup
	// for this long after its last shard marker; it must exceed the time between the first and
	// the last shard task of one run.
	OrphanGrace time.Duration
}

// DefaultConfig matches config.yaml.
func DefaultConfig() Config {
	return Config{LockTimeout: 0, RowGroupRows: 50000, UploadConcurrency: 8, OrphanGrace: 6 * time.Hour}
}

// Validate reports the first invalid field, named as in config.yaml.
func (c Config) Validate() error {
	if c.LockTimeout < 0 {
		return fmt.Errorf("lock_timeout: must be >= 0, got %s", c.LockTimeout)
	}
	if c.RowGroupRows < 1 {
		return fmt.Errorf("row_group_rows: must be >= 1, got %d", c.RowGroupRows)
	}
	if c.UploadConcurrency < 1 || c.UploadConcurrency > 256 {
		return fmt.Errorf("upload_concurrency: must be between 1 and 256, got %d", c.UploadConcurrency)
	}
	if c.OrphanGrace < 0 {
		return fmt.Errorf("orphan_grace: must be >= 0, got %s", c.OrphanGrace)
	}
	return nil
}

// Options selects what one `batch etl` run does.
type Options struct {
	// RunID names the run's files and manifest. "" generates one (UTC time + random suffix).
	// The n tasks of a sharded run must share one RunID; a RunID must be fresh for each run.
	RunID string
	// Shard and Shards restrict the run to customers with crc32(decimal customerNumber) % Shards
	// == Shard. Shards 0 means 1 (the whole table).
	Shard, Shards int
	// Progress, if set, is called on Run's goroutine with the source rows read so far.
	Progress func(rows int64)
}

// Result is what one run did.
type Result struct {
	RunID         string
	Shard, Shards int
	SourceRows    int64            // ratings rows read (this shard)
	Rows          int64            // rows written (this shard)
	Rejected      map[string]int64 // this shard's rejected rows by reason
	Partitions    int              // partitions written (this shard)
	Files         int
	Bytes         int64
	Published     bool              // this run published the manifest (the last shard to finish)
	Manifest      *dataset.Manifest // the published manifest when Published
	Removed       int               // partitions of customers no longer in the source, removed by the publish
	Deleted       int               // replaced, removed and orphaned files deleted after publishing
	Duration      time.Duration
}

var runIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$`)

// NewRunID returns a fresh run id: UTC start time plus a random suffix, sortable by time.
func NewRunID(now time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// Job exports ratings ⋈ products ⋈ customers to Hive-partitioned Snappy Parquet and publishes
// it atomically through the manifest. One Job does one run; Run is called once.
type Job struct {
	db    *sql.DB
	store objstore.Store
	cfg   Config
	opts  Options
	log   *zap.Logger
	now   func() time.Time

	// afterFile, when set (tests), runs after each file is queued; an error aborts the run
	// the way a crash would: files written, nothing published.
	afterFile func(files int) error
	// afterPublish, when set (tests), runs between the manifest's write and the cleanup.
	afterPublish func()
}

// New validates its arguments and does no I/O. store is the datalake location.
func New(db *sql.DB, store objstore.Store, cfg Config, opts Options, log *zap.Logger) (*Job, error) {
	if db == nil || store == nil {
		return nil, errors.New("etl: nil database or store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("etl: %w", err)
	}
	if opts.Shards == 0 {
		opts.Shards = 1
	}
	if opts.Shards < 1 || opts.Shards > 4096 || opts.Shard < 0 || opts.Shard >= opts.Shards {
		return nil, fmt.Errorf("etl: shard %d/%d: want 0 <= i < n <= 4096", opts.Shard, opts.Shards)
	}
	if opts.RunID == "" {
		if opts.Shards > 1 {
			return nil, errors.New("etl: a sharded run needs a run id shared by its n tasks")
		}
		opts.RunID = NewRunID(time.Now())
	}
	if !runIDPattern.MatchString(opts.RunID) {
		return nil, fmt.Errorf("etl: run id %q: want 1-64 letters, digits, '-' or '.'", opts.RunID)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Job{db: db, store: store, cfg: cfg, opts: opts, log: log, now: time.Now}, nil
}

// RunID is the run's id (generated by New when not given).
func (j *Job) RunID() string { return j.opts.RunID }

func (j *Job) sharded() bool { return j.opts.Shards > 1 }

// Run does the run: take the shard's lock (or return *LockedError), export, and publish when
// this is the last shard of the run to finish. Exit code 0 in cmd means Run returned nil.
func (j *Job) Run(ctx context.Context) (Result, error) {
	start := j.now()
	res := Result{RunID: j.opts.RunID, Shard: j.opts.Shard, Shards: j.opts.Shards}
	conn, err := j.db.Conn(ctx)
	if err != nil {
		return res, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	runLock, pubLock, err := j.lockNames(ctx, conn)
	if err != nil {
		return res, err
	}
	got, err := getLock(ctx, conn, runLock, j.cfg.LockTimeout)
	if err != nil {
		return res, err
	}
	if !got {
		return res, &LockedError{Lock: runLock, Holder: describeHolder(ctx, conn, j.store, runLock)}
	}
	// Release explicitly on the way out; a crash releases it with the connection.
	defer releaseLock(context.WithoutCancel(ctx), conn, runLock)
	if err := recordHolder(ctx, conn, j.store, runLock, j.opts.RunID); err != nil {
		return res, err
	}
	j.log.Debug("etl started", zap.String("run_id", j.opts.RunID), zap.Int("shard", j.opts.Shard), zap.Int("shards", j.opts.Shards), zap.String("location", j.store.URL(dataset.Prefix)))

	// The marker says a run started; it goes when the run publishes. A marker left behind
	// tells the next publisher to look for orphans (and, for a sharded run younger than
	// orphan_grace, protects its files while the other shards run).
	marker := fmt.Sprintf(`{"run_id":%q,"shard":%d,"shards":%d,"started_at":%q}`, j.opts.RunID, j.opts.Shard, j.opts.Shards, start.UTC().Format(time.RFC3339Nano))
	if err := j.store.Put(ctx, runsPrefix(j.opts.RunID)+shardName(j.opts.Shard, j.opts.Shards)+".started", strings.NewReader(marker)); err != nil {
		return res, fmt.Errorf("write run marker: %w", err)
	}

	shard, err := j.export(ctx, &res)
	if err != nil {
		return res, err
	}
	shard.StartedAt = start.UTC()
	shard.FinishedAt = j.now().UTC()

	if j.sharded() {
		b, err := json.Marshal(shard)
		if err != nil {
			return res, fmt.Errorf("encode shard manifest: %w", err)
		}
		if err := j.store.Put(ctx, runsPrefix(j.opts.RunID)+shardName(j.opts.Shard, j.opts.Shards)+".json", bytes.NewReader(b)); err != nil {
			return res, fmt.Errorf("write shard manifest: %w", err)
		}
	}
	return res, j.publishIfComplete(ctx, conn, pubLock, shard, start, &res)
}

// export streams the shard's source rows into partition files and returns the shard's part
// of the manifest; res gets the counts.
func (j *Job) export(ctx context.Context, res *Result) (*dataset.Manifest, error) {
	shard := dataset.NewManifest(j.opts.RunID, j.opts.Shards)
	shard.ShardsCovered = []int{j.opts.Shard}
	src, err := j.openSource(ctx)
	if err != nil {
		return nil, err
	}
	defer src.close()

	up := startUploads(ctx, j.store, j.cfg.UploadConcurrency)
	w := newExportWriter(up, shard, j.opts.RunID, j.opts.Shard, j.opts.Shards, j.cfg.RowGroupRows)
	w.afterFile = j.afterFile
	err = j.copyRows(src, w, shard)
	if err == nil {
		res.SourceRows, res.Rejected = shard.SourceRows, shard.Rejected
	}
	if werr := up.wait(); werr != nil && err == nil {
		err = werr
	}
	res.Rows, res.Partitions, res.Files, res.Bytes = shard.RunRows, len(shard.Partitions), w.files, w.bytes
	if err != nil {
		return nil, err
	}
	return shard, nil
}

// copyRows moves every source row into the writer, counting source and rejected rows in shard.
func (j *Job) copyRows(src *source, w *exportWriter, shard *dataset.Manifest) error {
	for {
		r, err := src.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		shard.SourceRows++
		if j.opts.Progress != nil && shard.SourceRows%4096 == 0 {
			j.opts.Progress(shard.SourceRows)
		}
		if r.reject != "" {
			shard.Rejected[r.reject]++
			continue
		}
		if err := w.add(r.customer, r.row); err != nil {
			return err
		}
	}
	if err := w.close(); err != nil {
		return err
	}
	if j.opts.Progress != nil {
		j.opts.Progress(shard.SourceRows)
	}
	return nil
}
