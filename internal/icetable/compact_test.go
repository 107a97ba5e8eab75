package icetable_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/parquet-go/parquet-go"

	"github.com/recstream/recstream/internal/icetable"
	"github.com/recstream/recstream/internal/icetable/icespec"
	"github.com/recstream/recstream/internal/icetable/icetabletest"
	"github.com/recstream/recstream/worker"
)

// Compaction copies rows with icetable.Row; the worker writes worker.TableRecord: one schema.
func TestCompactRowMatchesWorkerSchema(t *testing.T) {
	body := func(s string) string { _, rest, _ := strings.Cut(s, "{"); return rest } // the message name differs
	a, b := parquet.SchemaOf(icetable.Row{}).String(), parquet.SchemaOf(worker.TableRecord{}).String()
	if body(a) != body(b) {
		t.Fatalf("icetable.Row schema\n%s\ndiffers from worker.TableRecord's\n%s", a, b)
	}
}

// sessionsAt counts each record (shard/sequence) at snapshot s, read by icespec.
func sessionsAt(t *testing.T, env icetabletest.Env, s *icespec.Snapshot) (map[string]int, int) {
	t.Helper()
	files, err := icespec.LiveFilesAt(env.Read, s)
	if err != nil {
		t.Fatal(err)
	}
	rows := icetabletest.ReadRows[worker.TableRecord](t, env, icetabletest.Snapshot{Files: files})
	m := map[string]int{}
	for _, r := range rows {
		m[r.ShardID+"/"+r.SequenceNumber]++
	}
	return m, len(files)
}

// Compaction rewrites each closed hour into one file in one commit per hour: a reader at
// every snapshot (before, during, after) sees each record exactly once; a crash before the
// swap leaves the table as it was; the shard positions survive the compaction and the expiry
// of the snapshots that carried them; orphans (the replaced files) are removed.
func TestCompactExactlyOnceAtEverySnapshot(t *testing.T) {
	env := icetabletest.New(t)
	c := env.Committer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h0 := time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)
	want := map[string]int{}
	for shard := range 2 {
		key := icetable.ShardKey{Stream: "stream", Shard: fmt.Sprintf("shardId-%012d", shard)}
		prev := 0
		for hour := range 2 {
			for f := range 3 {
				first := prev + 1
				last := prev + 4
				loc := writeFile(t, c, key.Shard, first, last, h0.Add(time.Duration(hour)*time.Hour+time.Duration(f)*time.Minute))
				if err := c.Commit(ctx, icetable.Request{Shard: key, Files: []string{loc}, Prev: pos(prev), Last: pos(last)}); err != nil {
					t.Fatal(err)
				}
				for s := first; s <= last; s++ {
					want[fmt.Sprintf("%s/%d", key.Shard, s)] = 1
				}
				prev = last
			}
		}
	}
	// The current hour (h0+2h) is open: its file is left alone.
	open := writeFile(t, c, "shardId-000000000000", 1000, 1001, h0.Add(2*time.Hour))
	if err := c.Commit(ctx, icetable.Request{Shard: icetable.ShardKey{Stream: "stream", Shard: "shardId-000000000000"},
		Files: []string{open}, Prev: pos(24), Last: pos(1001)}); err != nil {
		t.Fatal(err)
	}
	want["shardId-000000000000/1000"], want["shardId-000000000000/1001"] = 1, 1

	cat := env.Catalog(t)
	tbl, err := cat.LoadTable(ctx, env.Config.Ident())
	if err != nil {
		t.Fatal(err)
	}
	posBefore, err := icetable.Positions(tbl.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	opts := icetable.CompactOptions{Now: h0.Add(2*time.Hour + 30*time.Minute), ClosedAfter: 10 * time.Minute, TargetBytes: 128 << 20}

	// A crash between writing the compacted files and the swap.
	crash := errors.New("crash before commit")
	o := opts
	o.BeforeCommit = func() error { return crash }
	if _, err := icetable.Compact(ctx, cat, env.Config.Ident(), o); !errors.Is(err, crash) {
		t.Fatalf("compact with a crash: %v", err)
	}
	if got, files := sessionsAt(t, env, env.ReadTable(t).Metadata.CurrentSnapshot()); !reflect.DeepEqual(got, want) || files != 13 {
		t.Fatalf("after the crash: %d files, records %v; want 13 files and every record once", files, got)
	}

	rep, err := icetable.Compact(ctx, cat, env.Config.Ident(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Hours != 2 || rep.FilesIn != 12 || rep.FilesOut != 2 || rep.Records != 48 {
		t.Fatalf("report %+v, want 2 hours, 12 files in, 2 out, 48 records", rep)
	}
	snap := env.ReadTable(t)
	if got, files := sessionsAt(t, env, snap.Metadata.CurrentSnapshot()); !reflect.DeepEqual(got, want) || files != 3 {
		t.Fatalf("after compaction: %d files, records %v; want 3 files (one per hour) and every record once", files, got)
	}
	// Every snapshot the table keeps: each record at most once, none lost once committed.
	for i := range snap.Metadata.Snapshots {
		s := &snap.Metadata.Snapshots[i]
		got, _ := sessionsAt(t, env, s)
		for k, n := range got {
			if n != 1 {
				t.Fatalf("snapshot %d: record %s seen %d times", s.ID, k, n)
			}
		}
	}
	tbl, err = cat.LoadTable(ctx, env.Config.Ident())
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := icetable.Positions(tbl.Metadata()); !reflect.DeepEqual(got, posBefore) {
		t.Fatalf("positions after compaction %v, want %v", got, posBefore)
	}

	// Expire everything but the current snapshot, then delete orphans: the replaced files go.
	time.Sleep(10 * time.Millisecond) // ages are compared with the wall clock at millisecond grain
	o = opts
	o.ExpireAfter, o.OrphanGrace = time.Millisecond, time.Millisecond
	rep, err = icetable.Compact(ctx, cat, env.Config.Ident(), o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Expired == 0 {
		t.Fatalf("report %+v: want snapshots expired", rep)
	}
	// The replaced files are gone from storage (expiry deletes what no snapshot references;
	// orphan cleanup anything older left behind): only the 3 live files remain under data/.
	u, _ := url.Parse(snap.Metadata.Location + "/data/")
	prefix := strings.TrimPrefix(u.Path, "/")
	out, err := env.S3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &u.Host, Prefix: &prefix})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != 3 {
		var keys []string
		for _, o := range out.Contents {
			keys = append(keys, *o.Key)
		}
		t.Fatalf("%d objects under data/ after expiry and cleanup, want the 3 live files: %v", len(out.Contents), keys)
	}
	snap = env.ReadTable(t)
	if got, files := sessionsAt(t, env, snap.Metadata.CurrentSnapshot()); !reflect.DeepEqual(got, want) || files != 3 {
		t.Fatalf("after expiry and orphan cleanup: %d files, records %v", files, got)
	}
	tbl, err = cat.LoadTable(ctx, env.Config.Ident())
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := icetable.Positions(tbl.Metadata()); !reflect.DeepEqual(got, posBefore) {
		t.Fatalf("positions after expiry %v, want %v", got, posBefore)
	}
}
