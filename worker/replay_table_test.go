package worker

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/icetable"
	"github.com/recstream/recstream/internal/icetable/icespec"
	"github.com/recstream/recstream/internal/icetable/icetabletest"
	"github.com/recstream/recstream/internal/stacktest"
)

// tableRecordsAt reads snapshot s of the env's table with icespec: session id → copies, and
// session id → model version.
func tableRecordsAt(t *testing.T, e *testEnv, s *icespec.Snapshot) (map[string]int, map[string]string) {
	t.Helper()
	files, err := icespec.LiveFilesAt(e.Ice.Read, s)
	if err != nil {
		t.Fatal(err)
	}
	count, model := map[string]int{}, map[string]string{}
	for _, r := range icetabletest.ReadRows[TableRecord](t, *e.Ice, icetabletest.Snapshot{Files: files}) {
		count[r.SessionID]++
		model[r.SessionID] = r.ModelVersion
	}
	return count, model
}

// TestReplayTableAfterCompact: a worker writes a stream to the Iceberg table, compact merges
// its flushes into files holding every shard's records of the hour, then `replay` with a new
// model rewrites the middle windows. The range's records leave in the commit that adds their
// replacements (the compacted file is rewritten keeping the records outside the range), so at
// every snapshot an independent reader (icespec) sees each record at most once, and before and
// after the replay exactly once, the range's with the new model after. A replay that crashes
// or is cancelled before its commit leaves the table (and errors/) as it was; a worker commit
// landing during the replay's commit is retried over, not lost, and the shards' positions
// carry forward.
func TestReplayTableAfterCompact(t *testing.T) {
	e := newTestEnv(t, 2)
	e.useIceberg(t)
	e.Cfg.Flush = FlushConfig{MaxRecords: 25, MaxBytes: 1 << 20, MaxAge: time.Second, WindowGrace: 500 * time.Millisecond}
	valid, rejected := replayInput(t, e, "r")
	w := start(e.newWorker(t, "live", testLogger(t), nil))
	e.waitExactlyOnce(t, "r", valid, 120*time.Second)
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool { return len(e.read(t).errors) == rejected }, "errors/ incomplete")
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cat := e.Ice.Catalog(t)
	ident := e.Ice.Config.Ident()

	// Compact every hour (the clock is pushed past them): the range now shares files with
	// records outside it.
	crep, err := icetable.Compact(ctx, cat, ident, icetable.CompactOptions{Now: time.Now().Add(3 * time.Hour), TargetBytes: 128 << 20, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if crep.FilesIn < 4 || crep.FilesOut > 2 {
		t.Fatalf("compaction %+v: want the flushes merged into one file per hour", crep)
	}
	before := e.Ice.ReadTable(t)
	if got, _ := tableRecordsAt(t, e, before.Metadata.CurrentSnapshot()); exactlyOnce(output{count: got}, "r", valid) != nil {
		t.Fatalf("after compaction: %v", exactlyOnce(output{count: got}, "r", valid))
	}
	errsBefore := snapshotErrors(t, e)
	tbl, err := cat.LoadTable(ctx, ident)
	if err != nil {
		t.Fatal(err)
	}
	posBefore, err := icetable.Positions(tbl.Metadata())
	if err != nil {
		t.Fatal(err)
	}

	// The range: the windows holding records, but the first and the last.
	buf := newBuffer(e.Cfg.Flush)
	windows := map[int64]time.Time{}
	arrival := map[string]int64{}
	for _, r := range icetabletest.ReadRows[TableRecord](t, *e.Ice, before) {
		w := buf.windowOf(r.ArrivalTime)
		windows[w] = r.ArrivalTime
		arrival[r.SessionID] = w
	}
	var ws []int64
	for w := range windows {
		ws = append(ws, w)
	}
	slices.Sort(ws)
	if len(ws) < 3 {
		t.Fatalf("records in %d windows; the test needs 3", len(ws))
	}
	req := ReplayRequest{From: windows[ws[1]], To: windows[ws[len(ws)-2]]}
	fromW, toW := ws[1], ws[len(ws)-2]
	deps := func(version string) Deps {
		return Deps{Store: e.store, Recommender: versioned{version}, K: 5, Log: testLogger(t)}
	}
	open := func() *icetable.Replace {
		rep, err := icetable.OpenReplace(ctx, cat, ident, fmt.Sprint(req), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	unchanged := func(when string) {
		t.Helper()
		now := e.Ice.ReadTable(t)
		if *now.Metadata.Current != *before.Metadata.Current {
			t.Fatalf("%s: current snapshot %d, was %d", when, *now.Metadata.Current, *before.Metadata.Current)
		}
		if got := snapshotErrors(t, e); !reflect.DeepEqual(got, errsBefore) {
			t.Fatalf("%s: errors/ changed: %v, was %v", when, got, errsBefore)
		}
	}

	// A crash just before the commit, then a cancellation there: nothing visible changes.
	crash := errors.New("crash before the commit")
	_, err = ReplayTable(ctx, e.Cfg, e.Stream, deps("fake-crash"), e.kc, open(), leaseFence(t, e), req,
		TableReplayOptions{BeforeCommit: func(int) error { return crash }})
	if !errors.Is(err, crash) {
		t.Fatalf("replay with a crash: %v", err)
	}
	unchanged("after a crash before the commit")
	cctx, ccancel := context.WithCancel(ctx)
	_, err = ReplayTable(cctx, e.Cfg, e.Stream, deps("fake-cancel"), e.kc, open(), leaseFence(t, e), req,
		TableReplayOptions{BeforeCommit: func(int) error { ccancel(); return nil }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("replay cancelled before its commit: %v", err)
	}
	unchanged("after a replay cancelled before its commit")

	// The replay, with a worker's commit (another shard) landing just before its first
	// attempt: the attempt conflicts, and the retry keeps that commit and its position.
	other := icetable.ShardKey{Stream: "other", Shard: "shardId-other"}
	committer := e.Ice.Committer(t)
	res, err := ReplayTable(ctx, e.Cfg, e.Stream, deps("fake-v2"), e.kc, open(), leaseFence(t, e), req, TableReplayOptions{BeforeCommit: func(attempt int) error {
		if attempt != 1 {
			return nil
		}
		rec := OutputRecord{SessionID: "other-1", ShardID: other.Shard, SequenceNumber: "7", ArrivalTime: time.Now().UTC().Truncate(time.Microsecond),
			ModelVersion: "fake-v1", RecommendedItems: []ScoredItem{{ID: "P-x", Score: 1}}}
		body, err := EncodeTableFile([]OutputRecord{rec})
		if err != nil {
			return err
		}
		loc := committer.DataPath(rec.ArrivalTime, "other-shardId-other-7_7.parquet")
		if err := committer.PutData(ctx, loc, body); err != nil {
			return err
		}
		return committer.Commit(ctx, icetable.Request{Shard: other, Files: []string{loc}, Last: icetable.Position{Seq: "7"}})
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Commit
	if c.Attempts < 2 || c.FilesKept == 0 || c.RecordsKept == 0 || c.FilesAdded == 0 || c.AlreadyLanded {
		t.Fatalf("replay commit %+v: want a retried commit that rewrote a compacted file keeping records outside the range", c)
	}
	var replayed int64
	for _, sr := range res.Shards {
		if sr.Stop != "to" {
			t.Fatalf("shard %s stopped at %q, want the end of the range", sr.ShardID, sr.Stop)
		}
		replayed += sr.Records
	}

	after := e.Ice.ReadTable(t)
	got, model := tableRecordsAt(t, e, after.Metadata.CurrentSnapshot())
	if got["other-1"] != 1 {
		t.Fatalf("the worker commit that landed during the replay is lost: %d copies", got["other-1"])
	}
	delete(got, "other-1")
	if err := exactlyOnce(output{count: got}, "r", valid); err != nil {
		t.Fatalf("after the replay: %v", err)
	}
	inRange := 0
	for id, w := range arrival {
		want := "fake-v1"
		if w >= fromW && w <= toW {
			want = "fake-v2"
			inRange++
		}
		if model[id] != want {
			t.Fatalf("record %s of window %d has model %s, want %s (range %d..%d)", id, w, model[id], want, fromW, toW)
		}
	}
	if inRange == 0 || inRange == len(arrival) || replayed == 0 {
		t.Fatalf("%d of %d records in the range (%d replayed): the test needs some in and some out", inRange, len(arrival), replayed)
	}
	// Every snapshot the table keeps: no record twice; the compacted one and the replay's
	// (and any later) hold every record once.
	for i := range after.Metadata.Snapshots {
		s := &after.Metadata.Snapshots[i]
		counts, _ := tableRecordsAt(t, e, s)
		for id, n := range counts {
			if n != 1 {
				t.Fatalf("snapshot %d: record %s seen %d times", s.ID, id, n)
			}
		}
		if s.ID == *before.Metadata.Current || s.Summary[icetable.ReplayKey] != "" {
			delete(counts, "other-1")
			if err := exactlyOnce(output{count: counts}, "r", valid); err != nil {
				t.Fatalf("snapshot %d (%s): %v", s.ID, s.Summary["recstream.operation"], err)
			}
		}
	}
	tbl, err = cat.LoadTable(ctx, ident)
	if err != nil {
		t.Fatal(err)
	}
	posAfter, err := icetable.Positions(tbl.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	posBefore[other] = icetable.Position{Seq: "7"}
	if !reflect.DeepEqual(posAfter, posBefore) {
		t.Fatalf("positions after the replay %v, want %v", posAfter, posBefore)
	}
	// errors/ holds every rejected record once (the range's rewritten in place).
	if n := len(e.read(t).errors); n != rejected {
		t.Fatalf("%d rejected records in errors/ after the replay, want %d", n, rejected)
	}

	// A rerun of the same range starts from the replay's snapshot: new names, and the table
	// still holds every record once.
	if _, err := ReplayTable(ctx, e.Cfg, e.Stream, deps("fake-v3"), e.kc, open(), leaseFence(t, e), req, TableReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ = tableRecordsAt(t, e, e.Ice.ReadTable(t).Metadata.CurrentSnapshot())
	delete(got, "other-1")
	if err := exactlyOnce(output{count: got}, "r", valid); err != nil {
		t.Fatalf("after a second replay: %v", err)
	}
}

// leaseFence reads the live checkpoints of the env's lease table.
func leaseFence(t *testing.T, e *testEnv) CheckpointReader {
	store, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: "replay", FailoverTime: e.Cfg.FailoverTime}, e.db)
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context, shardID string) (string, error) {
		ls, err := store.ListLeases(ctx)
		if err != nil {
			return "", err
		}
		for _, l := range ls {
			if l.ShardID == shardID {
				return l.Checkpoint, nil
			}
		}
		return "", nil
	}
}

// snapshotErrors is the errors/ objects (the env's store holds nothing else with a table):
// key → size.
func snapshotErrors(t *testing.T, e *testEnv) map[string]int {
	t.Helper()
	out := map[string]int{}
	for k, b := range snapshot(t, e.store) {
		out[k] = len(b)
	}
	return out
}
