package batch

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func runETL(t *testing.T, ctx context.Context, e *ETL) ETLResult {
	t.Helper()
	res, err := e.Run(ctx)
	if err != nil {
		t.Fatalf("etl run %s: %v", e.RunID(), err)
	}
	return res
}

func newETL(t *testing.T, db testDB, store objstore.Store, opts ETLOptions) *ETL {
	t.Helper()
	e, err := NewETL(db, store, DefaultConfig(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

type testDB = *sql.DB

// rowKey renders a row the way the lab CSV holds it: lab column order, NULL as "∅".
func rowKey(r TrainingRow) string {
	opt := func(p *string) string {
		if p == nil {
			return "∅"
		}
		return *p
	}
	cl := "∅"
	if !r.CreditLimitNull {
		cl = formatDecimal2(r.CreditLimitCents)
	}
	return strings.Join([]string{r.City, opt(r.State), opt(r.PostalCode), r.Country, cl, r.ProductCode, r.ProductLine, r.ProductScale,
		fmt.Sprint(r.QuantityInStock), formatDecimal2(r.BuyPriceCents), formatDecimal2(r.MSRPCents), fmt.Sprint(r.ProductRating), fmt.Sprint(r.CustomerNumber)}, "|")
}

// labRows reads testdata/lab/ratings_ml_training_dataset.csv (every value quoted, NULL as an
// empty unquoted field) into sorted row keys.
func labRows(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(stacktest.LabFile(t, "ratings_ml_training_dataset.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := NewCSVReader(f, "ratings_ml_training_dataset.csv")
	header, err := r.Read()
	if err != nil || len(header) != 13 || header[0].Value != "city" || header[12].Value != "customernumber" {
		t.Fatalf("unexpected lab header %v (%v)", header, err)
	}
	var out []string
	for {
		rec, err := r.Read()
		if err != nil {
			break
		}
		parts := make([]string, len(rec))
		for i, f := range rec {
			parts[i] = f.Value
			if f.Null {
				parts[i] = "∅"
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	sort.Strings(out)
	return out
}

func readAll(t *testing.T, ctx context.Context, store objstore.Store) (*Manifest, []TrainingRow) {
	t.Helper()
	m, err := ReadManifest(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	var rows []TrainingRow
	if err := ReadTrainingRows(ctx, store, m, func(r TrainingRow) error { rows = append(rows, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return m, rows
}

func keys(rows []TrainingRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = rowKey(r)
	}
	sort.Strings(out)
	return out
}

// dataFiles lists the Parquet files under the dataset's partitions.
func dataFiles(t *testing.T, ctx context.Context, store objstore.Store) []string {
	t.Helper()
	objs, err := store.List(ctx, DatasetPrefix+"/"+PartitionColumn+"=")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

func manifestFiles(m *Manifest) []string {
	var out []string
	for _, p := range m.Partitions {
		for _, f := range p.Files {
			out = append(out, f.Key)
		}
	}
	sort.Strings(out)
	return out
}

// assertExactlyManifest fails unless the store holds exactly the manifest's data files.
func assertExactlyManifest(t *testing.T, ctx context.Context, store objstore.Store, m *Manifest) {
	t.Helper()
	got, want := dataFiles(t, ctx, store), manifestFiles(m)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("store holds %d data files, manifest names %d:\nstore: %v\nmanifest: %v", len(got), len(want), got, want)
	}
}

func TestETLMatchesLabOutput(t *testing.T) {
	db, _ := testMySQL(t)
	seedShared(t, db)
	want := labRows(t)
	if len(want) != 2532 {
		t.Fatalf("lab output has %d rows, want 2532", len(want))
	}
	for _, backend := range []struct {
		name  string
		store func(testing.TB) objstore.Store
	}{{"file", fileStore}, {"s3", s3Store}} {
		t.Run(backend.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := backend.store(t)
			res := runETL(t, ctx, newETL(t, db, store, ETLOptions{}))
			if !res.Published || res.Rows != 2532 || res.SourceRows != 2532 || res.Partitions != 98 {
				t.Fatalf("result %+v: want published, 2532 rows, 98 partitions", res)
			}
			m, rows := readAll(t, ctx, store)
			if len(m.Partitions) != 98 || m.Rows != 2532 || m.SourceRows != 2532 || m.RunID != res.RunID {
				t.Fatalf("manifest: %d partitions, %d rows, %d source rows, run %s", len(m.Partitions), m.Rows, m.SourceRows, m.RunID)
			}
			got := keys(rows)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				for i := range min(len(got), len(want)) {
					if got[i] != want[i] {
						t.Fatalf("row multisets differ (%d vs %d rows); first difference:\n got  %s\n want %s", len(got), len(want), got[i], want[i])
					}
				}
				t.Fatalf("row multisets differ: got %d rows, want %d", len(got), len(want))
			}
			nullStates := 0
			for _, r := range rows {
				if r.State == nil {
					nullStates++
				}
			}
			wantNull := 0
			for _, w := range want {
				if strings.Split(w, "|")[1] == "∅" {
					wantNull++
				}
			}
			if nullStates != wantNull || nullStates == 0 {
				t.Errorf("NULL states: got %d, want %d", nullStates, wantNull)
			}
			assertExactlyManifest(t, ctx, store, m)
			checkFileLayout(t, ctx, store, m)
		})
	}
}

// checkFileLayout opens one data file and checks the Hive layout, compression and types.
func checkFileLayout(t *testing.T, ctx context.Context, store objstore.Store, m *Manifest) {
	p := m.Partitions[0]
	wantDir := fmt.Sprintf("%s/customerNumber=%d/", DatasetPrefix, p.CustomerNumber)
	f0 := p.Files[0]
	if !strings.HasPrefix(f0.Key, wantDir) || !strings.HasSuffix(f0.Key, ".snappy.parquet") || !strings.Contains(f0.Key, "part-"+m.RunID+"_") {
		t.Fatalf("file key %q: want %spart-%s_….snappy.parquet", f0.Key, wantDir, m.RunID)
	}
	b, err := objstore.ReadAll(ctx, store, f0.Key)
	if err != nil {
		t.Fatal(err)
	}
	f, err := parquet.OpenFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if f.NumRows() != f0.Rows {
		t.Errorf("file has %d rows, manifest says %d", f.NumRows(), f0.Rows)
	}
	cols := map[string]format.ColumnMetaData{}
	for _, rg := range f.Metadata().RowGroups {
		for _, c := range rg.Columns {
			cols[strings.Join(c.MetaData.PathInSchema, ".")] = c.MetaData
		}
	}
	if _, ok := cols["customerNumber"]; ok {
		t.Error("partition column customerNumber is inside the file; Hive partitioning keeps it in the path only")
	}
	for name, c := range cols {
		if c.Codec != format.Snappy {
			t.Errorf("column %s codec %v, want SNAPPY", name, c.Codec)
		}
	}
	for _, sc := range Schema() {
		leaf, ok := f.Schema().Lookup(sc.Name)
		if !ok {
			t.Errorf("column %s missing", sc.Name)
			continue
		}
		typ := leaf.Node.Type()
		if got := typ.Kind().String(); got != sc.Physical {
			t.Errorf("column %s physical %s, want %s", sc.Name, got, sc.Physical)
		}
		lt := typ.LogicalType()
		if lt == nil {
			lt = &format.LogicalType{}
		}
		switch sc.Logical {
		case "DECIMAL(10,2)":
			d, ok := lt.Value.(*format.DecimalType)
			if !ok || d.Precision != 10 || d.Scale != 2 {
				t.Errorf("column %s logical %v, want DECIMAL(10,2)", sc.Name, lt)
			}
		case "STRING":
			if _, ok := lt.Value.(*format.StringType); !ok {
				t.Errorf("column %s logical %v, want STRING (UTF8)", sc.Name, lt)
			}
		}
		if leaf.Node.Optional() != sc.Nullable {
			t.Errorf("column %s optional=%v, want %v", sc.Name, leaf.Node.Optional(), sc.Nullable)
		}
	}
}

func TestETLRerunIsIdempotent(t *testing.T) {
	db, _ := testMySQL(t)
	seedShared(t, db)
	ctx := testCtx(t)
	store := fileStore(t)
	first := runETL(t, ctx, newETL(t, db, store, ETLOptions{}))
	m1, rows1 := readAll(t, ctx, store)
	second := runETL(t, ctx, newETL(t, db, store, ETLOptions{}))
	m2, rows2 := readAll(t, ctx, store)
	if first.RunID == second.RunID || m2.RunID != second.RunID {
		t.Fatalf("run ids %s, %s; manifest %s", first.RunID, second.RunID, m2.RunID)
	}
	if strings.Join(keys(rows1), "\n") != strings.Join(keys(rows2), "\n") || len(m1.Partitions) != len(m2.Partitions) {
		t.Fatal("rerun changed the dataset")
	}
	if second.Deleted != first.Files {
		t.Errorf("rerun deleted %d files, want the first run's %d", second.Deleted, first.Files)
	}
	assertExactlyManifest(t, ctx, store, m2)
}

func TestETLKilledRunLeavesPublishedDatasetThenRerunCleansUp(t *testing.T) {
	db, _ := testMySQL(t)
	seedShared(t, db)
	for _, backend := range []struct {
		name  string
		store func(testing.TB) objstore.Store
	}{{"file", fileStore}, {"s3", s3Store}} {
		t.Run(backend.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := backend.store(t)
			good := runETL(t, ctx, newETL(t, db, store, ETLOptions{}))
			_, before := readAll(t, ctx, store)

			crash := errors.New("killed")
			dying := newETL(t, db, store, ETLOptions{})
			dying.afterFile = func(files int) error {
				if files == 40 {
					return crash
				}
				return nil
			}
			if _, err := dying.Run(ctx); !errors.Is(err, crash) {
				t.Fatalf("dying run: got %v, want the crash", err)
			}
			m, after := readAll(t, ctx, store)
			if m.RunID != good.RunID || strings.Join(keys(after), "\n") != strings.Join(keys(before), "\n") {
				t.Fatalf("after a crash the manifest is run %s (want %s) with %d rows", m.RunID, good.RunID, len(after))
			}
			orphans := 0
			for _, k := range dataFiles(t, ctx, store) {
				if fileRunID(k) == dying.RunID() {
					orphans++
				}
			}
			if orphans == 0 {
				t.Fatal("the dying run left no files; the test does not exercise orphan cleanup")
			}
			rerun := runETL(t, ctx, newETL(t, db, store, ETLOptions{}))
			m, rows := readAll(t, ctx, store)
			if m.RunID != rerun.RunID || len(rows) != 2532 || len(m.Partitions) != 98 {
				t.Fatalf("rerun manifest run %s, %d rows, %d partitions", m.RunID, len(rows), len(m.Partitions))
			}
			assertExactlyManifest(t, ctx, store, m)
		})
	}
}

func TestETLOverlappingRunExitsWithHolder(t *testing.T) {
	db, _ := testMySQL(t)
	seedShared(t, db)
	ctx := testCtx(t)
	store := fileStore(t)
	var dbName string
	if err := db.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	lock, _ := lockNames(dbName, store.URL(DatasetPrefix), 0, 1)

	// A "running" first job: it holds the lock on its own connection.
	holder, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var holderID int64
	if err := holder.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&holderID); err != nil {
		t.Fatal(err)
	}
	if ok, err := getLock(ctx, holder, lock, 0); err != nil || !ok {
		t.Fatalf("take lock: %v %v", ok, err)
	}
	_, err = newETL(t, db, store, ETLOptions{}).Run(ctx)
	var locked *LockedError
	if !errors.As(err, &locked) {
		t.Fatalf("second run: got %v, want *LockedError", err)
	}
	if !strings.Contains(locked.Error(), fmt.Sprintf("MySQL connection %d", holderID)) {
		t.Errorf("lock error %q does not name holder connection %d", locked.Error(), holderID)
	}
	if _, err := ReadManifest(ctx, store); !errors.Is(err, ErrNoDataset) {
		t.Errorf("the locked-out run published something: %v", err)
	}
	// The holder dies: its session ends, and with it the lock.
	if _, err := db.ExecContext(ctx, "KILL ?", holderID); err != nil {
		t.Fatal(err)
	}
	holder.Close()
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		var free int
		return db.QueryRowContext(ctx, "SELECT IS_FREE_LOCK(?)", lock).Scan(&free) == nil && free == 1
	}, "lock %s still held after its holder's connection was killed", lock)
	if res := runETL(t, ctx, newETL(t, db, store, ETLOptions{})); !res.Published {
		t.Fatal("run after the holder died did not publish")
	}
}

func TestETLShardsTogetherEqualOneFullRun(t *testing.T) {
	db, _ := testMySQL(t)
	seedShared(t, db)
	ctx := testCtx(t)
	full := fileStore(t)
	runETL(t, ctx, newETL(t, db, full, ETLOptions{}))
	_, fullRows := readAll(t, ctx, full)

	store := fileStore(t)
	const n = 3
	runID := "shardtest-1"
	var rows int64
	for i := range n {
		res := runETL(t, ctx, newETL(t, db, store, ETLOptions{RunID: runID, Shard: i, Shards: n}))
		rows += res.Rows
		_, err := ReadManifest(ctx, store)
		if i < n-1 {
			if res.Published || !errors.Is(err, ErrNoDataset) {
				t.Fatalf("shard %d of %d published (%v, %v) before all shards were in", i, n, res.Published, err)
			}
		} else if !res.Published || err != nil {
			t.Fatalf("last shard did not publish: %v", err)
		}
	}
	m, got := readAll(t, ctx, store)
	if fmt.Sprint(m.ShardsCovered) != "[0 1 2]" || m.Shards != n || m.RunID != runID || rows != 2532 {
		t.Fatalf("manifest shards %v of %d, run %s; shard rows sum %d", m.ShardsCovered, m.Shards, m.RunID, rows)
	}
	if strings.Join(keys(got), "\n") != strings.Join(keys(fullRows), "\n") {
		t.Fatal("the shards' union differs from one full run")
	}
	for _, p := range m.Partitions {
		for _, f := range p.Files {
			if want := fmt.Sprintf("_s%dof%d_", ShardOf(p.CustomerNumber, n), n); !strings.Contains(f.Key, want) {
				t.Errorf("partition %d file %s: Go's ShardOf says %s", p.CustomerNumber, f.Key, want)
			}
		}
	}
	assertExactlyManifest(t, ctx, store, m)
	if objs, _ := store.List(ctx, DatasetPrefix+"/_runs/"); len(objs) != 0 {
		t.Errorf("staging objects left after publish: %v", objs)
	}
}

func TestETLBadSourceRowsAreRejectedAndCounted(t *testing.T) {
	db, _ := testMySQL(t)
	seedShared(t, db)
	ctx := testCtx(t)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A source without the constraints (older MySQL ignores CHECK): sneak bad rows in.
	for _, q := range []string{
		"SET SESSION foreign_key_checks = 0",
		"SET SESSION check_constraint_checks = 0",
		"UPDATE ratings SET productRating = 7 WHERE customerNumber = 103 AND productCode = 'S10_2016'",
		"INSERT INTO ratings VALUES (103, 'NOPE_0001', 4)",
		"INSERT INTO ratings VALUES (999999, 'S10_2016', 2)",
		"INSERT INTO ratings VALUES (112, 'S10_1678', 0)",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Close()
	store := fileStore(t)
	res := runETL(t, ctx, newETL(t, db, store, ETLOptions{}))
	want := map[string]int64{RejectRatingOutOfRange: 2, RejectUnknownProduct: 1, RejectUnknownCustomer: 1}
	m, rows := readAll(t, ctx, store)
	if fmt.Sprint(m.Rejected) != fmt.Sprint(want) || fmt.Sprint(res.Rejected) != fmt.Sprint(want) {
		t.Fatalf("rejected: manifest %v, result %v, want %v", m.Rejected, res.Rejected, want)
	}
	if m.SourceRows != 2532+3 || m.RunRows != 2531 || len(rows) != 2531 {
		t.Fatalf("source rows %d, run rows %d, read %d", m.SourceRows, m.RunRows, len(rows))
	}
	for _, r := range rows {
		if r.ProductRating < MinRating || r.ProductRating > MaxRating {
			t.Fatalf("row with rating %d was written", r.ProductRating)
		}
	}
}

func TestETLDryRunWritesNothing(t *testing.T) {
	db, _ := testMySQL(t)
	seedShared(t, db)
	ctx := testCtx(t)
	store := fileStore(t)
	p, err := newETL(t, db, store, ETLOptions{}).Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.SourceRows != 2532 || p.Customers != 98 || p.Published != nil || p.LockHolder != "" {
		t.Fatalf("plan %+v", p)
	}
	var out bytes.Buffer
	if err := p.Write(&out); err != nil || !strings.Contains(out.String(), "2532 ratings over 98 customers") {
		t.Fatalf("plan text %q (%v)", out.String(), err)
	}
	if objs, err := store.List(ctx, ""); err != nil || len(objs) != 0 {
		t.Fatalf("dry run wrote %v (%v)", objs, err)
	}
}

func TestETLCleanupSparesUnfinishedShardedRunUntilGrace(t *testing.T) {
	db, _ := testMySQL(t)
	seedShared(t, db)
	ctx := testCtx(t)
	store := fileStore(t)
	runETL(t, ctx, newETL(t, db, store, ETLOptions{RunID: "slow-1", Shard: 0, Shards: 2}))
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
	runETL(t, ctx, newETL(t, db, store, ETLOptions{}))
	if got := countOf("slow-1"); got != before {
		t.Fatalf("cleanup removed %d files of a sharded run within orphan_grace", before-got)
	}
	// Past the grace period the run counts as dead and its files are orphans.
	cfg := DefaultConfig()
	cfg.OrphanGrace = time.Nanosecond
	e, err := NewETL(db, store, cfg, ETLOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	runETL(t, ctx, e)
	if got := countOf("slow-1"); got != 0 {
		t.Fatalf("%d files of a run older than orphan_grace survived", got)
	}
	m, _ := readAll(t, ctx, store)
	assertExactlyManifest(t, ctx, store, m)
	if objs, _ := store.List(ctx, DatasetPrefix+"/_runs/"); len(objs) != 0 {
		t.Errorf("run markers left: %v", objs)
	}
}

// seedGenerated (re)creates the schema and loads g.
func seedGenerated(t *testing.T, ctx context.Context, db *sql.DB, g *Generator) {
	t.Helper()
	s, err := NewSeeder(db, DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSchema(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadGenerated(ctx, g, nil); err != nil {
		t.Fatal(err)
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
	db, _ := testMySQL(t)
	for _, backend := range []struct {
		name  string
		store func(testing.TB) objstore.Store
	}{{"file", fileStore}, {"s3", s3Store}} {
		t.Run(backend.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := backend.store(t)
			gA, _ := NewGenerator(11, 60, 8)
			seedGenerated(t, ctx, db, gA)
			first := runETL(t, ctx, newETL(t, db, store, ETLOptions{}))
			if first.Removed != 0 || first.Partitions != 60 {
				t.Fatalf("first run: %+v", first)
			}
			mA, _ := readAll(t, ctx, store)

			gB, _ := NewGenerator(11, 45, 8)
			seedGenerated(t, ctx, db, gB)
			erased := []int{CustomerNumber(3), CustomerNumber(10), CustomerNumber(20)}
			eraseCustomers(t, ctx, db, erased...)
			gone := map[int]bool{}
			for _, c := range erased {
				gone[c] = true
			}
			for i := 45; i < 60; i++ {
				gone[CustomerNumber(i)] = true
			}
			var want []TrainingRow
			_ = gB.EachTrainingRow(ctx, func(r TrainingRow) error {
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
				b1, err := objstore.ReadAll(ctx, store, ManifestKey)
				if err != nil {
					rr.violations = append(rr.violations, "manifest: "+err.Error())
					return
				}
				m, err := ReadManifest(ctx, store)
				if err != nil {
					rr.violations = append(rr.violations, err.Error())
					return
				}
				var n int64
				err = ReadTrainingRows(ctx, store, m, func(TrainingRow) error { n++; return nil })
				b2, _ := objstore.ReadAll(ctx, store, ManifestKey)
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

			second := newETL(t, db, store, ETLOptions{})
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
					if strings.Contains(k, fmt.Sprintf("/%s=%d/", PartitionColumn, c)) {
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
	db, _ := testMySQL(t)
	ctx := testCtx(t)
	g, _ := NewGenerator(12, 40, 6)
	seedGenerated(t, ctx, db, g)
	store := fileStore(t)
	runETL(t, ctx, newETL(t, db, store, ETLOptions{}))
	erased := []int{CustomerNumber(1), CustomerNumber(2), CustomerNumber(33)}
	eraseCustomers(t, ctx, db, erased...)
	const n = 3
	var last ETLResult
	for i := range n {
		last = runETL(t, ctx, newETL(t, db, store, ETLOptions{RunID: "sharded-1", Shard: i, Shards: n}))
	}
	m, got := readAll(t, ctx, store)
	if !last.Published || m.RemovedPartitions != 3 || last.Removed != 3 || len(m.Partitions) != 37 {
		t.Fatalf("published %v, %d partitions, removed %d", last.Published, len(m.Partitions), m.RemovedPartitions)
	}
	var want []TrainingRow
	_ = g.EachTrainingRow(ctx, func(r TrainingRow) error {
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
	prev := &Manifest{Format: ManifestFormat, RunID: "old", Shards: 1, ShardsCovered: []int{0}}
	for c := 1; c <= 12; c++ {
		prev.Partitions = append(prev.Partitions, Partition{CustomerNumber: c, RunID: "old", Rows: 1})
	}
	b, _ := json.Marshal(prev)
	if err := store.Put(ctx, ManifestKey, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	// A run of 3 shards whose shard 0 is merged alone (a partial merge) and rewrote one customer
	// of its slice.
	rw := 1
	for ShardOf(rw, 3) != 0 {
		rw++
	}
	e := &ETL{store: store, opts: ETLOptions{RunID: "new", Shards: 3}, now: time.Now, log: zap.NewNop()}
	shard := &Manifest{ShardsCovered: []int{0}, Partitions: []Partition{{CustomerNumber: rw, RunID: "new", Rows: 2}}}
	m, _, err := e.publish(ctx, []*Manifest{shard})
	if err != nil {
		t.Fatal(err)
	}
	removed := 0
	for c := 1; c <= 12; c++ {
		inSlice := ShardOf(c, 3) == 0
		var p *Partition
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
