package embeddings

import (
	"context"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// progressInterval is how often a load logs its progress: cron and ECS read the logs. Under
// 10 s so that a tick the scheduler delays still keeps the gap between two lines under 10 s.
const progressInterval = 9 * time.Second

// loadProgress logs a load's heartbeat. While a file is copied (stage "copy"): the file, rows
// and bytes read so far, elapsed time and, when the file's size is known, an ETA. While an
// index is built (stage "index"): the statement, how long it has run, and for an HNSW build
// PostgreSQL's own progress (pg_stat_progress_create_index: phase and tuples done) with an
// ETA from it. Its methods are safe for concurrent use.
type loadProgress struct {
	log   *zap.Logger
	now   func() time.Time
	start time.Time
	// pool is where the heartbeat reads pg_stat_progress_create_index (never the loading
	// connection, which is busy with the build); nil reads nothing.
	pool *pgxpool.Pool

	rows  atomic.Int64
	bytes atomic.Int64

	mu         sync.Mutex
	stage      string
	file       string
	fileSize   int64 // -1: unknown
	what       string
	table      string
	tableRows  int64
	builderPID uint32
	stageStart time.Time
}

func newLoadProgress(log *zap.Logger, now func() time.Time, pool *pgxpool.Pool) *loadProgress {
	t := now()
	return &loadProgress{log: log, now: now, start: t, pool: pool, stage: "copy", stageStart: t, fileSize: -1}
}

// run logs a heartbeat at every tick until ctx ends.
func (p *loadProgress) run(ctx context.Context, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			p.heartbeat(ctx)
		}
	}
}

// copying records that file (size bytes, -1 when unknown) is being read and copied.
func (p *loadProgress) copying(file string, size int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rows.Store(0)
	p.bytes.Store(0)
	p.stage, p.file, p.fileSize, p.stageStart = "copy", file, size, p.now()
}

// building records that what (an index or ANALYZE) is being built on table (rows rows) by
// the backend with process id pid.
func (p *loadProgress) building(what, table string, rows int64, pid uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stage, p.what, p.table, p.tableRows, p.builderPID, p.stageStart = "index", what, table, rows, pid, p.now()
}

func (p *loadProgress) heartbeat(ctx context.Context) {
	p.mu.Lock()
	now := p.now()
	fields := []zap.Field{zap.String("stage", p.stage), zap.Duration("elapsed", now.Sub(p.start).Round(time.Millisecond))}
	stageElapsed := now.Sub(p.stageStart)
	var pid uint32
	var rows int64
	switch p.stage {
	case "copy":
		done, read := p.rows.Load(), p.bytes.Load()
		fields = append(fields, zap.String("file", p.file), zap.Int64("rows_done", done), zap.Int64("bytes_done", read),
			zap.Duration("file_elapsed", stageElapsed.Round(time.Millisecond)))
		if p.fileSize > 0 {
			fields = append(fields, zap.Int64("bytes_total", p.fileSize))
			if read > 0 && read <= p.fileSize {
				fields = append(fields, zap.Duration("eta", time.Duration(float64(stageElapsed)*float64(p.fileSize-read)/float64(read)).Round(time.Second)))
			}
		}
	case "index":
		fields = append(fields, zap.String("building", p.what), zap.String("table", p.table),
			zap.Duration("build_elapsed", stageElapsed.Round(time.Millisecond)))
		pid, rows = p.builderPID, p.tableRows
	}
	p.mu.Unlock()
	if pid != 0 && p.pool != nil {
		fields = append(fields, p.buildProgress(ctx, pid, rows, stageElapsed)...)
	}
	p.log.Info("embeddings progress", fields...)
}

// buildProgress reads PostgreSQL's progress of the index build in backend pid (pgvector
// reports the tuples an HNSW build has inserted into its graph); nothing when it cannot.
func (p *loadProgress) buildProgress(ctx context.Context, pid uint32, rows int64, elapsed time.Duration) []zap.Field {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var phase string
	var done, total int64
	err := p.pool.QueryRow(ctx, "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index WHERE pid = $1", int32(pid)).
		Scan(&phase, &done, &total)
	if err != nil {
		if err != pgx.ErrNoRows {
			p.log.Debug("read index build progress", zap.Error(err))
		}
		return nil
	}
	if total <= 0 {
		total = rows
	}
	fields := []zap.Field{zap.String("phase", phase), zap.Int64("tuples_done", done), zap.Int64("tuples_total", total)}
	if done > 0 && done <= total {
		fields = append(fields, zap.Duration("eta", time.Duration(float64(elapsed)*float64(total-done)/float64(done)).Round(time.Second)))
	}
	return fields
}

// countingReader counts the bytes read through it into n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(b []byte) (int, error) {
	k, err := c.r.Read(b)
	c.n.Add(int64(k))
	return k, err
}

// countingSource counts the rows pgx takes from a CopyFromSource into n.
type countingSource struct {
	pgx.CopyFromSource
	n *atomic.Int64
}

func (c countingSource) Next() bool {
	if !c.CopyFromSource.Next() {
		return false
	}
	c.n.Add(1)
	return true
}

// hnswBytesPerRow estimates the memory pgvector's HNSW build takes per row while the graph is
// held in maintenance_work_mem: the element, its vector (8 + 4·dim bytes) and its layer-0
// neighbour list (2·m candidates of 16 bytes), with allocation overhead. Calibrated on the
// 1,000,000 × 32 build (m = 16): with 256MB the build slowed about fivefold after some 300,000
// rows, when pgvector stops building in memory ("hnsw graph no longer fits into
// maintenance_work_mem") and inserts the rest into the on-disk index one by one.
func hnswBytesPerRow(dim, m int) int64 { return int64(160 + 4*dim + 32*m) }

// memBytes parses a maintenance_work_mem value as pg.Config validates it (64MB, 1GB, 65536kB).
func memBytes(s string) (int64, bool) {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.mult, err == nil
		}
	}
	return 0, false
}
