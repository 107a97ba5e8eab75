package icetable

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	iceio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/snappy"
	"go.uber.org/zap"
)

// CompactOptions configures Compact.
type CompactOptions struct {
	// Now is the clock; an hour is closed once Now is ClosedAfter past its end.
	Now         time.Time
	ClosedAfter time.Duration
	// TargetBytes is the size of a compacted file (~128 MiB); an hour smaller than that
	// becomes one file.
	TargetBytes int64
	// ExpireAfter: snapshots older than this are expired (0: none), unless that would drop
	// a shard's position from the table.
	ExpireAfter time.Duration
	// OrphanGrace: files under the table location that no snapshot references and that are
	// older than this are deleted (0: none). Must exceed the time between a worker's PUT of
	// a data file and its commit, by far.
	OrphanGrace time.Duration
	// BeforeCommit, when set (tests), runs after the compacted files are written and before
	// the commit that swaps them in: a crash there must leave the table as it was.
	BeforeCommit func() error
	Log          *zap.Logger
}

// CompactReport says what Compact did.
type CompactReport struct {
	Hours        int   `json:"hours_compacted"`
	FilesIn      int   `json:"files_in"`
	FilesOut     int   `json:"files_out"`
	Records      int64 `json:"records"`
	Commits      int   `json:"commits"`
	Expired      int   `json:"snapshots_expired"`
	OrphansFound int   `json:"orphans_deleted"`
}

// Row is one table row as compaction copies it: every column of the table's schema (see
// Schema), named as the data files name them.
type Row struct {
	SessionID         string      `parquet:"session_id"`
	CustomerNumber    int64       `parquet:"customer_number"`
	City              string      `parquet:"city"`
	Country           string      `parquet:"country"`
	CreditLimit       float64     `parquet:"credit_limit"`
	BrowseHistory     []rowBrowse `parquet:"browse_history,list"`
	RecommendedItems  []rowScored `parquet:"recommended_items,list"`
	SimilarItems      rowSimilar  `parquet:"similar_items"`
	ShardID           string      `parquet:"shard_id"`
	SequenceNumber    string      `parquet:"sequence_number"`
	SubSequenceNumber int64       `parquet:"sub_sequence_number"`
	ArrivalTime       time.Time   `parquet:"arrival_time,timestamp(microsecond:utc)"`
	ModelVersion      string      `parquet:"model_version"`
}

type rowBrowse struct {
	ProductCode    string `parquet:"product_code"`
	Quantity       int64  `parquet:"quantity"`
	InShoppingCart bool   `parquet:"in_shopping_cart"`
}

type rowScored struct {
	ID    string  `parquet:"id"`
	Score float64 `parquet:"score"`
}

type rowNear struct {
	ID       string  `parquet:"id"`
	Distance float64 `parquet:"distance"`
}

type rowSimilar struct {
	ProductCode  string    `parquet:"product_code"`
	SimilarItems []rowNear `parquet:"similar_items,list"`
}

// Compact bin-packs every closed hour of the table that has more than one data file into
// files of about TargetBytes, each swap one commit (the replaced files leave in the commit
// that adds their replacement, so a reader at any snapshot sees every record once), then
// expires old snapshots and deletes orphan files. Memory: one input file and one row batch
// at a time; the output is spooled to a temporary file.
//
// Every compaction commit carries every shard's position in its summary, so expiring the
// snapshots that carried them before cannot lose one.
func Compact(ctx context.Context, cat catalog.Catalog, ident table.Identifier, o CompactOptions) (CompactReport, error) {
	var rep CompactReport
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("component", "compact"), zap.String("table", strings.Join(ident, ".")))
	tbl, err := cat.LoadTable(ctx, ident)
	if err != nil {
		return rep, fmt.Errorf("load iceberg table: %w", err)
	}
	groups, err := closedHourGroups(ctx, tbl, o)
	if err != nil {
		return rep, err
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return rep, err
	}
	for _, g := range groups {
		start := time.Now()
		outs, n, err := rewrite(ctx, fs, tbl.Location(), g)
		if err != nil {
			return rep, fmt.Errorf("compact hour %s: %w", g.hour.Format("2006-01-02T15"), err)
		}
		if o.BeforeCommit != nil {
			if err := o.BeforeCommit(); err != nil {
				return rep, err
			}
		}
		if err := commitReplace(ctx, cat, ident, g.paths, outs); err != nil {
			return rep, fmt.Errorf("compact hour %s: %w", g.hour.Format("2006-01-02T15"), err)
		}
		rep.Hours++
		rep.Commits++
		rep.FilesIn += len(g.paths)
		rep.FilesOut += len(outs)
		rep.Records += n
		log.Info("hour compacted", zap.Time("hour", g.hour), zap.Int("files_in", len(g.paths)), zap.Int("files_out", len(outs)),
			zap.Int64("records", n), zap.Duration("duration", time.Since(start)))
	}
	if o.ExpireAfter > 0 {
		n, err := expire(ctx, cat, ident, o.ExpireAfter, log)
		if err != nil {
			return rep, err
		}
		rep.Expired = n
	}
	if o.OrphanGrace > 0 {
		tbl, err := cat.LoadTable(ctx, ident)
		if err != nil {
			return rep, fmt.Errorf("load iceberg table: %w", err)
		}
		res, err := tbl.DeleteOrphanFiles(ctx, table.WithFilesOlderThan(o.OrphanGrace))
		if err != nil {
			return rep, fmt.Errorf("delete orphan files: %w", err)
		}
		rep.OrphansFound = len(res.DeletedFiles)
		log.Info("orphan files deleted", zap.Int("files", len(res.DeletedFiles)))
	}
	return rep, nil
}

// group is the files of one closed hour to rewrite together.
type group struct {
	hour  time.Time
	paths []string
	size  int64
}

func closedHourGroups(ctx context.Context, tbl *table.Table, o CompactOptions) ([]group, error) {
	if tbl.CurrentSnapshot() == nil {
		return nil, nil
	}
	tasks, err := tbl.Scan().PlanFiles(ctx)
	if err != nil {
		return nil, fmt.Errorf("plan files: %w", err)
	}
	type file struct {
		path string
		size int64
	}
	byHour := map[int64][]file{}
	for _, t := range tasks {
		if len(t.DeleteFiles)+len(t.EqualityDeleteFiles)+len(t.DeletionVectorFiles) > 0 {
			return nil, fmt.Errorf("%s has delete files: the worker never writes them, refusing to compact", t.File.FilePath())
		}
		var h int64 = -1
		for _, v := range t.File.Partition() {
			switch x := v.(type) {
			case int32:
				h = int64(x)
			case int64:
				h = x
			case int:
				h = int64(x)
			}
		}
		if h < 0 {
			return nil, fmt.Errorf("%s: no hour partition value", t.File.FilePath())
		}
		byHour[h] = append(byHour[h], file{t.File.FilePath(), t.File.FileSizeBytes()})
	}
	var out []group
	for h, files := range byHour {
		hour := time.Unix(h*3600, 0).UTC()
		if o.Now.Before(hour.Add(time.Hour + o.ClosedAfter)) {
			continue
		}
		sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
		// Bin-pack in name order (shard, then sequence); an hour already in files near the
		// target is left alone.
		var cur group
		var groups []group
		for _, f := range files {
			if cur.size > 0 && cur.size+f.size > o.TargetBytes {
				groups = append(groups, cur)
				cur = group{}
			}
			cur.hour = hour
			cur.paths = append(cur.paths, f.path)
			cur.size += f.size
		}
		groups = append(groups, cur)
		for _, g := range groups {
			if len(g.paths) > 1 {
				out = append(out, g)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].hour.Equal(out[j].hour) {
			return out[i].hour.Before(out[j].hour)
		}
		return out[i].paths[0] < out[j].paths[0]
	})
	return out, nil
}

// rewrite copies the group's rows, in order, into one new data file named after a hash of its
// inputs (a crashed run's rerun rewrites the same name) and returns its location.
func rewrite(ctx context.Context, fsys iceio.IO, location string, g group) ([]string, int64, error) {
	h := sha256.New()
	for _, p := range g.paths {
		io.WriteString(h, p)
		h.Write([]byte{0})
	}
	name := "compacted-" + hex.EncodeToString(h.Sum(nil))[:32] + ".parquet"
	out := fmt.Sprintf("%s/data/arrival_time_hour=%s/%s", strings.TrimSuffix(location, "/"), g.hour.Format("2006-01-02-15"), name)
	tmp, err := os.CreateTemp("", "recstream-compact-*.parquet")
	if err != nil {
		return nil, 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	w := parquet.NewGenericWriter[Row](tmp, parquet.Compression(&snappy.Codec{}))
	var n int64
	batch := make([]Row, 1024)
	for _, p := range g.paths {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		f, err := fsys.Open(p)
		if err != nil {
			return nil, 0, fmt.Errorf("open %s: %w", p, err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		pf, err := parquet.OpenFile(f, st.Size())
		if err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("read %s: %w", p, err)
		}
		r := parquet.NewGenericReader[Row](pf)
		for {
			k, err := r.Read(batch)
			if k > 0 {
				if _, werr := w.Write(batch[:k]); werr != nil {
					r.Close()
					f.Close()
					return nil, 0, fmt.Errorf("write %s: %w", out, werr)
				}
				n += int64(k)
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				r.Close()
				f.Close()
				return nil, 0, fmt.Errorf("read %s: %w", p, err)
			}
		}
		r.Close()
		f.Close()
	}
	if err := w.Close(); err != nil {
		return nil, 0, fmt.Errorf("write %s: %w", out, err)
	}
	if err := putFile(ctx, out, tmp); err != nil {
		return nil, 0, fmt.Errorf("put %s: %w", out, err)
	}
	return []string{out}, n, nil
}

// commitReplace swaps the group's files for their rewrite in one snapshot, carrying every
// shard's position. Worker commits land between attempts all the time: a conflict reloads
// the table, checks that every input is still live (only compaction removes files), and tries
// again.
func commitReplace(ctx context.Context, cat catalog.Catalog, ident table.Identifier, olds, news []string) error {
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		tbl, err := cat.LoadTable(ctx, ident)
		if err != nil {
			return fmt.Errorf("load iceberg table: %w", err)
		}
		pos, err := Positions(tbl.Metadata())
		if err != nil {
			return err
		}
		props := iceberg.Properties{"recstream.operation": "compact"}
		for k, p := range pos {
			props[PositionKey(k.Stream, k.Shard)] = p.String()
		}
		txn := tbl.NewTransaction()
		if err := txn.AssertRefSnapshotID(table.MainBranch); err != nil {
			return err
		}
		if err := txn.ReplaceDataFiles(ctx, olds, news, props); err != nil {
			return fmt.Errorf("replace %d files: %w", len(olds), err)
		}
		_, err = txn.Commit(ctx)
		if err == nil {
			return nil
		}
		if !isConflict(err) || attempt >= 50 {
			return fmt.Errorf("commit compaction (attempt %d): %w", attempt, err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// expire expires snapshots older than age, unless that would drop a shard's position from
// the table (no compaction commit carrying them is young enough yet).
func expire(ctx context.Context, cat catalog.Catalog, ident table.Identifier, age time.Duration, log *zap.Logger) (int, error) {
	tbl, err := cat.LoadTable(ctx, ident)
	if err != nil {
		return 0, fmt.Errorf("load iceberg table: %w", err)
	}
	before, err := Positions(tbl.Metadata())
	if err != nil {
		return 0, err
	}
	txn := tbl.NewTransaction()
	if err := txn.ExpireSnapshots(table.WithOlderThan(age), table.WithRetainLast(1)); err != nil {
		return 0, fmt.Errorf("expire snapshots: %w", err)
	}
	staged, err := txn.StagedTable()
	if err != nil {
		return 0, err
	}
	after, err := Positions(staged.Metadata())
	if err != nil {
		return 0, err
	}
	for k, p := range before {
		if after[k] != p {
			log.Warn("snapshot expiry skipped: it would drop a shard position (compact an hour first)",
				zap.String("shard_id", k.Shard), zap.String("position", p.String()))
			return 0, nil
		}
	}
	n := len(tbl.Metadata().Snapshots()) - len(staged.Metadata().Snapshots())
	if n == 0 {
		return 0, nil
	}
	if _, err := txn.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit snapshot expiry: %w", err)
	}
	log.Info("snapshots expired", zap.Int("snapshots", n))
	return n, nil
}
