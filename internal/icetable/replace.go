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
	"strconv"
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

// ReplayKey is the snapshot-summary key of a replay's commit; its value is the replay's id, so
// a rerun whose commit answer was lost finds that it landed.
const ReplayKey = "recstream.replay"

// Range is the records of one shard a replay rewrites: every record whose position is between
// First and Last (inclusive), and whose arrival hour is one of Hours (the range's records
// arrived in those hours: only those partitions can hold them).
type Range struct {
	Shard       ShardKey
	First, Last Position
	Hours       []time.Time
}

func (r Range) holds(p Position) bool { return r.First.Compare(p) <= 0 && p.Compare(r.Last) <= 0 }

// Replace rewrites ranges of records in one commit: the data files holding them leave the
// table in the snapshot that adds their replacements, so a reader at any snapshot sees every
// record of a range once, old or new, never both and never neither. It is what `recstream
// replay` does to an Iceberg table: the replacements are written first (DataPath, PutData),
// then Commit swaps them in.
//
// The table's shard positions are read once, at OpenReplace (the fence: a replay rewrites only
// records the table already holds; later ones are the live workers' to add), and carried
// forward unchanged by the commit, which is a compare-and-swap like the workers': a worker
// commit landing in between makes it reload and try again.
type Replace struct {
	cat       catalog.Catalog
	ident     table.Identifier
	location  string
	id        string
	positions map[ShardKey]Position
	log       *zap.Logger
}

// OpenReplace reads the table's current snapshot and shard positions. tag distinguishes
// replays started from the same snapshot (e.g. the request's range): the replay's id, which
// names its files, is the snapshot id and a hash of tag, so a rerun after a crash with no
// commit in between rewrites the same names, and a replay never writes a name a committed
// file has (a later replay starts from a later snapshot).
func OpenReplace(ctx context.Context, cat catalog.Catalog, ident table.Identifier, tag string, log *zap.Logger) (*Replace, error) {
	tbl, err := cat.LoadTable(ctx, ident)
	if err != nil {
		return nil, fmt.Errorf("load iceberg table: %w", err)
	}
	pos, err := Positions(tbl.Metadata())
	if err != nil {
		return nil, err
	}
	var base int64
	if s := tbl.CurrentSnapshot(); s != nil {
		base = s.SnapshotID
	}
	h := sha256.Sum256([]byte(tag))
	if log == nil {
		log = zap.NewNop()
	}
	id := strconv.FormatInt(base, 10) + "-" + hex.EncodeToString(h[:])[:12]
	return &Replace{cat: cat, ident: ident, location: strings.TrimSuffix(tbl.Location(), "/"), id: id, positions: pos,
		log: log.With(zap.String("component", "replay"), zap.String("table", strings.Join(ident, ".")), zap.String("replay_id", id))}, nil
}

// ID is the replay's id (file names and the commit's summary).
func (r *Replace) ID() string { return r.id }

// Position is the shard's position in the table when the replay started: its fence.
func (r *Replace) Position(shard ShardKey) Position { return r.positions[shard] }

// DataPath is the location of a replacement data file: in the hour's partition directory,
// named replay-<id>-<name>, never a name a live file has.
func (r *Replace) DataPath(hour time.Time, name string) string {
	return fmt.Sprintf("%s/data/arrival_time_hour=%s/replay-%s-%s", r.location, hour.UTC().Format("2006-01-02-15"), r.id, name)
}

// PutData writes one replacement data file at location (under DataPath).
func (r *Replace) PutData(ctx context.Context, location string, body []byte) error {
	if !strings.HasPrefix(location, r.location+"/data/") || !strings.Contains(location, "/replay-"+r.id+"-") {
		return fmt.Errorf("replay data file %q is not one of this replay's", location)
	}
	return putLocation(ctx, location, body)
}

// ReplaceOptions configures Commit.
type ReplaceOptions struct {
	// BeforeCommit, when set (tests), runs before each commit attempt, once every file is
	// written and the commit staged: a crash there must leave the table as it was, and a
	// commit another writer makes there must be kept (the attempt conflicts and is retried).
	BeforeCommit func(attempt int) error
}

// ReplaceReport says what Commit did.
type ReplaceReport struct {
	ReplayID string `json:"replay_id"`
	// FilesRemoved: live data files that held records of the ranges (all of them leave).
	FilesRemoved int `json:"files_removed"`
	// FilesKept: of those, files that also held other records, rewritten without the range's
	// (copy-on-write) as KeptFiles new files holding RecordsKept records.
	FilesKept   int   `json:"files_rewritten"`
	RecordsKept int64 `json:"records_kept"`
	// RecordsRemoved: the ranges' records that left the table; FilesAdded: the replacements.
	RecordsRemoved int64 `json:"records_removed"`
	FilesAdded     int   `json:"files_added"`
	Attempts       int   `json:"attempts"`
	// Landed: the commit was found already in the table (a rerun after a lost answer).
	AlreadyLanded bool `json:"already_landed,omitempty"`
}

// fileSplit is what a live data file holds with respect to the ranges.
type fileSplit struct {
	in, out int64
	keep    string // the copy-on-write file of the out records (when in > 0 and out > 0)
}

// Commit swaps the ranges' records for the files the replay wrote (files: locations from
// DataPath, every one PUT). The live data files of the ranges' hours are read (identity
// columns only) to find those holding records of a range; a file holding other records too
// is rewritten without the range's first (copy-on-write, under a name derived from the
// replay's id and the file's path). Then one commit removes those files and adds the
// replacements and the rewrites, with every shard's position carried forward.
//
// A conflict (a worker committed first) reloads the table and tries again; files already
// classified are not read again (data files never change), so a retry only reads the files
// committed meanwhile. A file of the plan no longer live (compaction, or another replay,
// replaced it) is replanned from the table as it is now.
func (r *Replace) Commit(ctx context.Context, ranges []Range, files []string, o ReplaceOptions) (ReplaceReport, error) {
	rep := ReplaceReport{ReplayID: r.id, FilesAdded: len(files)}
	byShard := map[string]Range{}
	hours := map[int64]bool{}
	for _, rg := range ranges {
		if _, dup := byShard[rg.Shard.Shard]; dup {
			return rep, fmt.Errorf("replay: two ranges of shard %s", rg.Shard.Shard)
		}
		byShard[rg.Shard.Shard] = rg
		for _, h := range rg.Hours {
			hours[h.UTC().Unix()/3600] = true
		}
	}
	split := map[string]*fileSplit{}
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		rep.Attempts = attempt
		tbl, err := r.cat.LoadTable(ctx, r.ident)
		if err != nil {
			return rep, fmt.Errorf("load iceberg table: %w", err)
		}
		if landed(tbl.Metadata(), r.id) {
			rep.AlreadyLanded = true
			r.log.Info("replay commit already in the table")
			return rep, nil
		}
		fsys, err := tbl.FS(ctx)
		if err != nil {
			return rep, err
		}
		var olds []string
		news := slicesClone(files)
		rep.FilesRemoved, rep.FilesKept, rep.RecordsKept, rep.RecordsRemoved = 0, 0, 0, 0
		if tbl.CurrentSnapshot() != nil {
			tasks, err := tbl.Scan().PlanFiles(ctx)
			if err != nil {
				return rep, fmt.Errorf("plan files: %w", err)
			}
			for _, t := range tasks {
				if len(t.DeleteFiles)+len(t.EqualityDeleteFiles)+len(t.DeletionVectorFiles) > 0 {
					return rep, fmt.Errorf("%s has delete files: recstream never writes them, refusing to replay", t.File.FilePath())
				}
				h, err := partitionHour(t.File)
				if err != nil {
					return rep, err
				}
				if !hours[h] {
					continue
				}
				p := t.File.FilePath()
				s := split[p]
				if s == nil {
					if s, err = r.classify(ctx, fsys, p, h, byShard); err != nil {
						return rep, err
					}
					split[p] = s
				}
				if s.in == 0 {
					continue
				}
				olds = append(olds, p)
				rep.FilesRemoved++
				rep.RecordsRemoved += s.in
				if s.keep != "" {
					news = append(news, s.keep)
					rep.FilesKept++
					rep.RecordsKept += s.out
				}
			}
		}
		if len(olds) == 0 && len(news) == 0 {
			r.log.Info("replay: nothing to commit")
			return rep, nil
		}
		sort.Strings(olds)
		sort.Strings(news)
		pos, err := Positions(tbl.Metadata())
		if err != nil {
			return rep, err
		}
		props := iceberg.Properties{"recstream.operation": "replay", ReplayKey: r.id}
		for k, p := range pos {
			props[PositionKey(k.Stream, k.Shard)] = p.String()
		}
		txn := tbl.NewTransaction()
		if err := txn.AssertRefSnapshotID(table.MainBranch); err != nil {
			return rep, err
		}
		if len(olds) == 0 {
			// Records of the range that were all rejected before and are valid now.
			err = txn.AddFiles(ctx, news, props, false)
		} else {
			err = txn.ReplaceDataFiles(ctx, olds, news, props)
		}
		if err != nil {
			return rep, fmt.Errorf("replay: replace %d files with %d: %w", len(olds), len(news), err)
		}
		if o.BeforeCommit != nil {
			if err := o.BeforeCommit(attempt); err != nil {
				return rep, err
			}
		}
		start := time.Now()
		_, err = txn.Commit(ctx)
		if err == nil {
			r.log.Info("replay committed", zap.Int("files_removed", rep.FilesRemoved), zap.Int("files_rewritten", rep.FilesKept),
				zap.Int("files_added", len(news)), zap.Int64("records_removed", rep.RecordsRemoved), zap.Int64("records_kept", rep.RecordsKept),
				zap.Int("attempts", attempt), zap.Duration("duration", time.Since(start)))
			return rep, nil
		}
		if attempt >= 50 {
			return rep, fmt.Errorf("commit replay (attempt %d): %w", attempt, err)
		}
		if isConflict(err) {
			r.log.Info("replay commit conflict, retrying", zap.Int("attempt", attempt))
		} else {
			// Unknown outcome: the next attempt finds the commit in the table if it landed.
			r.log.Warn("replay commit failed, retrying", zap.Error(err), zap.Int("attempt", attempt))
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// landed reports whether a snapshot of the current branch's history carries the replay's id.
func landed(meta table.Metadata, id string) bool {
	seen := map[int64]bool{}
	for s := meta.CurrentSnapshot(); s != nil && !seen[s.SnapshotID]; {
		seen[s.SnapshotID] = true
		if s.Summary != nil && s.Summary.Properties[ReplayKey] == id {
			return true
		}
		if s.ParentSnapshotID == nil {
			break
		}
		s = meta.SnapshotByID(*s.ParentSnapshotID)
	}
	return false
}

// partitionHour is a data file's hour partition value (hours since the epoch).
func partitionHour(f iceberg.DataFile) (int64, error) {
	for _, v := range f.Partition() {
		switch x := v.(type) {
		case int32:
			return int64(x), nil
		case int64:
			return x, nil
		case int:
			return int64(x), nil
		}
	}
	return 0, fmt.Errorf("%s: no hour partition value", f.FilePath())
}

// identity is the columns that name a record: its shard and position in it.
type identity struct {
	ShardID           string `parquet:"shard_id"`
	SequenceNumber    string `parquet:"sequence_number"`
	SubSequenceNumber int64  `parquet:"sub_sequence_number"`
}

// rangeOf reports whether a range holds the record. byShard is keyed by shard id: the stream
// is not a column, a table is written from one stream.
func rangeOf(byShard map[string]Range, id identity) bool {
	rg, ok := byShard[id.ShardID]
	return ok && rg.holds(Position{Seq: id.SequenceNumber, Sub: id.SubSequenceNumber})
}

// classify counts the records of the file inside and outside the ranges, and when it holds
// both, writes the copy-on-write file of the others (same order, same columns).
func (r *Replace) classify(ctx context.Context, fsys iceio.IO, path string, hour int64, byShard map[string]Range) (*fileSplit, error) {
	s := &fileSplit{}
	err := readRows[identity](ctx, fsys, path, func(ids []identity) error {
		for _, id := range ids {
			if rangeOf(byShard, id) {
				s.in++
			} else {
				s.out++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.in == 0 || s.out == 0 {
		return s, nil
	}
	h := sha256.Sum256([]byte(path))
	keep := fmt.Sprintf("%s/data/arrival_time_hour=%s/replay-%s-keep-%s.parquet", r.location,
		time.Unix(hour*3600, 0).UTC().Format("2006-01-02-15"), r.id, hex.EncodeToString(h[:])[:24])
	tmp, err := os.CreateTemp("", "recstream-replay-*.parquet")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	w := parquet.NewGenericWriter[Row](tmp, parquet.Compression(&snappy.Codec{}))
	var kept int64
	err = readRows[Row](ctx, fsys, path, func(rows []Row) error {
		out := rows[:0]
		for _, row := range rows {
			if !rangeOf(byShard, identity{row.ShardID, row.SequenceNumber, row.SubSequenceNumber}) {
				out = append(out, row)
			}
		}
		kept += int64(len(out))
		_, err := w.Write(out)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", keep, err)
	}
	if kept != s.out {
		return nil, fmt.Errorf("%s: %d records outside the range on the second read, %d on the first", path, kept, s.out)
	}
	if err := putFile(ctx, keep, tmp); err != nil {
		return nil, fmt.Errorf("put %s: %w", keep, err)
	}
	s.keep = keep
	r.log.Info("file rewritten without the range (copy-on-write)", zap.String("file", path), zap.String("kept_in", keep),
		zap.Int64("records_kept", s.out), zap.Int64("records_replaced", s.in))
	return s, nil
}

// readRows reads a data file in batches of T (a struct naming some of the table's columns:
// only those are read).
func readRows[T any](ctx context.Context, fsys iceio.IO, path string, fn func([]T) error) error {
	f, err := fsys.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	rd := parquet.NewGenericReader[T](pf)
	defer rd.Close()
	batch := make([]T, 1024)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, err := rd.Read(batch)
		if k > 0 {
			if ferr := fn(batch[:k]); ferr != nil {
				return fmt.Errorf("%s: %w", path, ferr)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
	}
}
