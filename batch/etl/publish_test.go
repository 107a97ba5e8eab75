package etl

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/batch/seed"
	"github.com/recstream/recstream/batch/seed/seedtest"
	"github.com/recstream/recstream/internal/objstore"
)

func TestETLCleanupSparesUnfinishedShardedRunUntilGrace(t *testing.T) {
	db, _ := seedtest.DB(t)
	seedtest.Shared(t, db)
	ctx := testCtx(t)
	store := fileStore(t)
	runETL(t, ctx, newETL(t, db, store, Options{RunID: "slow-1", Shard: 0, Shards: 2}))
	countOf := func(rid string) int {
		n := 0
		for _, k := range dataFiles(t, ctx, store) {
			if fileRunID(k) == rid {
				n++
			}
		}
		return n
	}
	before := countOf("slow-1")
	if before == 0 {
		t.Fatal("shard 0 wrote no files")
	}
	// An unsharded run publishes meanwhile: the unfinished sharded run may still be running.
	runETL(t, ctx, newETL(t, db, store, Options{}))
	if got := countOf("slow-1"); got != before {
		t.Fatalf("cleanup removed %d files of a sharded run within orphan_grace", before-got)
	}
	// Past the grace period the run counts as dead and its files are orphans.
	cfg := DefaultConfig()
	cfg.OrphanGrace = time.Nanosecond
	e, err := New(db, store, cfg, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	runETL(t, ctx, e)
	if got := countOf("slow-1"); got != 0 {
		t.Fatalf("%d files of a run older than orphan_grace survived", got)
	}
	m, _ := readAll(t, ctx, store)
	assertExactlyManifest(t, ctx, store, m)
	if objs, _ := store.List(ctx, dataset.Prefix+"/_runs/"); len(objs) != 0 {
		t.Errorf("run markers left: %v", objs)
	}
}

// eraseCustomers deletes customers and everything of theirs from the source, as a GDPR
// erasure would.
func eraseCustomers(t *testing.T, ctx context.Context, db *sql.DB, numbers ...int) {
	t.Helper()
	in := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(numbers)), ","), "[]")
	for _, q := range []string{
		"DELETE FROM ratings WHERE customerNumber IN (" + in + ")",
		"DELETE d FROM orderdetails d JOIN orders o ON o.orderNumber = d.orderNumber WHERE o.customerNumber IN (" + in + ")",
		"DELETE FROM payments WHERE customerNumber IN (" + in + ")",
		"DELETE FROM orders WHERE customerNumber IN (" + in + ")",
		"DELETE FROM customers WHERE customerNumber IN (" + in + ")",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestETLPublishesExactlyTheCurrentJoin: seed A → etl → seed B, which lacks some of A's
// customers (15 dropped by a smaller generator, 3 more erased) → etl. The manifest and the
// files then hold exactly B's join: the 18 partitions of customers gone from the source are
// out of the manifest (counted in removed_partitions) and their files deleted. Meanwhile a
// reader going through the manifest never finds a file of the current manifest missing: the
// new manifest names only files already written, and the old files go only after it is
// published.
func TestETLPublishesExactlyTheCurrentJoin(t *testing.T) {
	db, _ := seedtest.DB(t)
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := backend.store(t)
			gA, _ := seed.NewGenerator(11, 60, 8)
			seedtest.Generated(t, ctx, db, gA)
			first := runETL(t, ctx, newETL(t, db, store, Options{}))
			if first.Removed != 0 || first.Partitions != 60 {
				t.Fatalf("first run: %+v", first)
			}
			mA, _ := readAll(t, ctx, store)

			gB, _ := seed.NewGenerator(11, 45, 8)
			seedtest.Generated(t, ctx, db, gB)
			erased := []int{seed.CustomerNumber(3), seed.CustomerNumber(10), seed.CustomerNumber(20)}
			eraseCustomers(t, ctx, db, erased...)
			gone := map[int]bool{}
			for _, c := range erased {
				gone[c] = true
			}
			for i := 45; i < 60; i++ {
				gone[seed.CustomerNumber(i)] = true
			}
			var want []dataset.TrainingRow
			_ = gB.EachTrainingRow(ctx, func(r dataset.TrainingRow) error {
				if !gone[r.CustomerNumber] {
					want = append(want, r)
				}
				return nil
			})

			// A reader that reads the whole dataset through the manifest, again and again.
			type readResult struct {
				runs       map[string]int // complete reads per manifest run id
				violations []string
			}
			var rr readResult
			rr.runs = map[string]int{}
			readOnce := func() {
				b1, err := objstore.ReadAll(ctx, store, dataset.ManifestKey)
				if err != nil {
					rr.violations = append(rr.violations, "manifest: "+err.Error())
					return
				}
				m, err := dataset.ReadManifest(ctx, store)
				if err != nil {
					rr.violations = append(rr.violations, err.Error())
					return
				}
				var n int64
				err = dataset.ReadTrainingRows(ctx, store, m, func(dataset.TrainingRow) error { n++; return nil })
				b2, _ := objstore.ReadAll(ctx, store, dataset.ManifestKey)
				switch {
				case err != nil && bytes.Equal(b1, b2):
					rr.violations = append(rr.violations, fmt.Sprintf("run %s is still published but a file is missing: %v", m.RunID, err))
				case err == nil && n != m.Rows:
					rr.violations = append(rr.violations, fmt.Sprintf("run %s: read %d rows, manifest says %d", m.RunID, n, m.Rows))
				case err == nil:
					rr.runs[m.RunID]++
				}
			}
			var mu sync.Mutex
			stop, done := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					readOnce()
					mu.Unlock()
				}
			}()

			second := newETL(t, db, store, Options{})
			var oldFilesAtPublish, newFilesAtPublish []string
			second.afterPublish = func() {
				// Published, not yet cleaned up: the reader gets a full read of the new dataset,
				// and every file of the old one is still there.
				mu.Lock()
				defer mu.Unlock()
				readOnce()
				newFilesAtPublish = dataFiles(t, ctx, store)
				oldFilesAtPublish = manifestFiles(mA)
			}
			res := runETL(t, ctx, second)
			close(stop)
			<-done
			mu.Lock()
			readOnce()
			mu.Unlock()

			if len(rr.violations) > 0 {
				t.Fatalf("the reader saw %d inconsistent datasets, first: %s", len(rr.violations), rr.violations[0])
			}
			if rr.runs[first.RunID] == 0 || rr.runs[second.RunID()] < 2 {
				t.Fatalf("reads per run: %v; want the old dataset read before the publish and the new one during and after", rr.runs)
			}
			have := map[string]bool{}
			for _, k := range newFilesAtPublish {
				have[k] = true
			}
			for _, k := range oldFilesAtPublish {
				if !have[k] {
					t.Fatalf("file %s of the previous dataset was deleted before the new manifest was published", k)
				}
			}

			m, got := readAll(t, ctx, store)
			if strings.Join(keys(got), "\n") != strings.Join(keys(want), "\n") {
				t.Fatalf("the dataset holds %d rows, B's join %d", len(got), len(want))
			}
			if m.RemovedPartitions != 18 || res.Removed != 18 || len(m.Partitions) != 42 || m.Rows != int64(len(want)) {
				t.Fatalf("manifest: %d partitions, %d rows, removed %d (result %d); want 42, %d, 18", len(m.Partitions), m.Rows, m.RemovedPartitions, res.Removed, len(want))
			}
			var wantRemovedRows int64
			for _, p := range mA.Partitions {
				if gone[p.CustomerNumber] {
					wantRemovedRows += p.Rows
				}
			}
			if m.RemovedRows != wantRemovedRows {
				t.Errorf("removed_rows %d, want %d", m.RemovedRows, wantRemovedRows)
			}
			for _, p := range m.Partitions {
				if gone[p.CustomerNumber] || p.RunID != second.RunID() {
					t.Fatalf("partition %d of run %s in the manifest", p.CustomerNumber, p.RunID)
				}
			}
			assertExactlyManifest(t, ctx, store, m)
			for _, k := range dataFiles(t, ctx, store) {
				for c := range gone {
					if strings.Contains(k, fmt.Sprintf("/%s=%d/", dataset.PartitionColumn, c)) {
						t.Fatalf("file %s of removed customer %d survived", k, c)
					}
				}
			}
			if res.Deleted != first.Files {
				t.Errorf("deleted %d files, want all %d of the first run", res.Deleted, first.Files)
			}
		})
	}
}

// TestETLShardedRunRemovesErasedCustomers: a sharded run publishes when all its shards are in and
// then holds exactly the source's join too; the partitions of customers erased meanwhile go.
func TestETLShardedRunRemovesErasedCustomers(t *testing.T) {
	db, _ := seedtest.DB(t)
	ctx := testCtx(t)
	g, _ := seed.NewGenerator(12, 40, 6)
	seedtest.Generated(t, ctx, db, g)
	store := fileStore(t)
	runETL(t, ctx, newETL(t, db, store, Options{}))
	erased := []int{seed.CustomerNumber(1), seed.CustomerNumber(2), seed.CustomerNumber(33)}
	eraseCustomers(t, ctx, db, erased...)
	const n = 3
	var last Result
	for i := range n {
		last = runETL(t, ctx, newETL(t, db, store, Options{RunID: "sharded-1", Shard: i, Shards: n}))
	}
	m, got := readAll(t, ctx, store)
	if !last.Published || m.RemovedPartitions != 3 || last.Removed != 3 || len(m.Partitions) != 37 {
		t.Fatalf("published %v, %d partitions, removed %d", last.Published, len(m.Partitions), m.RemovedPartitions)
	}
	var want []dataset.TrainingRow
	_ = g.EachTrainingRow(ctx, func(r dataset.TrainingRow) error {
		if !slices.Contains(erased, r.CustomerNumber) {
			want = append(want, r)
		}
		return nil
	})
	if strings.Join(keys(got), "\n") != strings.Join(keys(want), "\n") {
		t.Fatalf("the dataset holds %d rows, the source's join %d", len(got), len(want))
	}
	assertExactlyManifest(t, ctx, store, m)
}

// TestPublishCarriesOverOnlyUncoveredSlices: the publish rule itself, for a merge that would
// not cover every slice: a previous partition survives only outside the covered slices.
func TestPublishCarriesOverOnlyUncoveredSlices(t *testing.T) {
	ctx := testCtx(t)
	store := fileStore(t)
	// Customers 1..12 published by an earlier run.
	prev := &dataset.Manifest{Format: dataset.ManifestFormat, RunID: "old", Shards: 1, ShardsCovered: []int{0}}
	for c := 1; c <= 12; c++ {
		prev.Partitions = append(prev.Partitions, dataset.Partition{CustomerNumber: c, RunID: "old", Rows: 1})
	}
	b, _ := json.Marshal(prev)
	if err := store.Put(ctx, dataset.ManifestKey, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	// A run of 3 shards whose shard 0 is merged alone (a partial merge) and rewrote one customer
	// of its slice.
	rw := 1
	for ShardOf(rw, 3) != 0 {
		rw++
	}
	e := &Job{store: store, opts: Options{RunID: "new", Shards: 3}, now: time.Now, log: zap.NewNop()}
	shard := &dataset.Manifest{ShardsCovered: []int{0}, Partitions: []dataset.Partition{{CustomerNumber: rw, RunID: "new", Rows: 2}}}
	m, _, err := e.publish(ctx, []*dataset.Manifest{shard})
	if err != nil {
		t.Fatal(err)
	}
	removed := 0
	for c := 1; c <= 12; c++ {
		inSlice := ShardOf(c, 3) == 0
		var p *dataset.Partition
		for k := range m.Partitions {
			if m.Partitions[k].CustomerNumber == c {
				p = &m.Partitions[k]
			}
		}
		switch {
		case c == rw && (p == nil || p.RunID != "new"):
			t.Fatalf("customer %d: %+v, want the new run's partition", c, p)
		case c != rw && inSlice && p != nil:
			t.Fatalf("customer %d of the covered slice carried over", c)
		case !inSlice && (p == nil || p.RunID != "old"):
			t.Fatalf("customer %d outside the covered slice: %+v, want it carried over", c, p)
		}
		if c != rw && inSlice {
			removed++
		}
	}
	if m.RemovedPartitions != removed || removed == 0 {
		t.Fatalf("removed %d, want %d", m.RemovedPartitions, removed)
	}
}
