package etl

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/batch/seed"
	"github.com/recstream/recstream/batch/seed/seedtest"
	"github.com/recstream/recstream/internal/csvio"
	"github.com/recstream/recstream/internal/mysqldb"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func runETL(t *testing.T, ctx context.Context, e *Job) Result {
	t.Helper()
	res, err := e.Run(ctx)
	if err != nil {
		t.Fatalf("etl run %s: %v", e.RunID(), err)
	}
	return res
}

func newETL(t *testing.T, db testDB, store objstore.Store, opts Options) *Job {
	t.Helper()
	e, err := New(db, store, DefaultConfig(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

type testDB = *sql.DB

// rowKey renders a row the way the lab CSV holds it: lab column order, NULL as "∅".
func rowKey(r dataset.TrainingRow) string {
	opt := func(p *string) string {
		if p == nil {
			return "∅"
		}
		return *p
	}
	cl := "∅"
	if !r.CreditLimitNull {
		cl = mysqldb.FormatDecimal2(r.CreditLimitCents)
	}
	return strings.Join([]string{r.City, opt(r.State), opt(r.PostalCode), r.Country, cl, r.ProductCode, r.ProductLine, r.ProductScale,
		fmt.Sprint(r.QuantityInStock), mysqldb.FormatDecimal2(r.BuyPriceCents), mysqldb.FormatDecimal2(r.MSRPCents), fmt.Sprint(r.ProductRating), fmt.Sprint(r.CustomerNumber)}, "|")
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
	r := csvio.NewReader(f, "ratings_ml_training_dataset.csv")
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

func readAll(t *testing.T, ctx context.Context, store objstore.Store) (*dataset.Manifest, []dataset.TrainingRow) {
	t.Helper()
	m, err := dataset.ReadManifest(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	var rows []dataset.TrainingRow
	if err := dataset.ReadTrainingRows(ctx, store, m, func(r dataset.TrainingRow) error { rows = append(rows, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return m, rows
}

func keys(rows []dataset.TrainingRow) []string {
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
	objs, err := store.List(ctx, dataset.Prefix+"/"+dataset.PartitionColumn+"=")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

func manifestFiles(m *dataset.Manifest) []string {
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
func assertExactlyManifest(t *testing.T, ctx context.Context, store objstore.Store, m *dataset.Manifest) {
	t.Helper()
	got, want := dataFiles(t, ctx, store), manifestFiles(m)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("store holds %d data files, manifest names %d:\nstore: %v\nmanifest: %v", len(got), len(want), got, want)
	}
}

func TestETLMatchesLabOutput(t *testing.T) {
	db, _ := seedtest.DB(t)
	seedtest.Shared(t, db)
	want := labRows(t)
	if len(want) != 2532 {
		t.Fatalf("lab output has %d rows, want 2532", len(want))
	}
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := backend.store(t)
			res := runETL(t, ctx, newETL(t, db, store, Options{}))
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
func checkFileLayout(t *testing.T, ctx context.Context, store objstore.Store, m *dataset.Manifest) {
	p := m.Partitions[0]
	wantDir := fmt.Sprintf("%s/customerNumber=%d/", dataset.Prefix, p.CustomerNumber)
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
	for _, sc := range dataset.Schema() {
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
	db, _ := seedtest.DB(t)
	seedtest.Shared(t, db)
	ctx := testCtx(t)
	store := fileStore(t)
	first := runETL(t, ctx, newETL(t, db, store, Options{}))
	m1, rows1 := readAll(t, ctx, store)
	second := runETL(t, ctx, newETL(t, db, store, Options{}))
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
	db, _ := seedtest.DB(t)
	seedtest.Shared(t, db)
	for _, backend := range backends {
		t.Run(backend.name, func(t *testing.T) {
			ctx := testCtx(t)
			store := backend.store(t)
			good := runETL(t, ctx, newETL(t, db, store, Options{}))
			_, before := readAll(t, ctx, store)

			crash := errors.New("killed")
			dying := newETL(t, db, store, Options{})
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
			rerun := runETL(t, ctx, newETL(t, db, store, Options{}))
			m, rows := readAll(t, ctx, store)
			if m.RunID != rerun.RunID || len(rows) != 2532 || len(m.Partitions) != 98 {
				t.Fatalf("rerun manifest run %s, %d rows, %d partitions", m.RunID, len(rows), len(m.Partitions))
			}
			assertExactlyManifest(t, ctx, store, m)
		})
	}
}

func TestETLShardsTogetherEqualOneFullRun(t *testing.T) {
	db, _ := seedtest.DB(t)
	seedtest.Shared(t, db)
	ctx := testCtx(t)
	full := fileStore(t)
	runETL(t, ctx, newETL(t, db, full, Options{}))
	_, fullRows := readAll(t, ctx, full)

	store := fileStore(t)
	const n = 3
	runID := "shardtest-1"
	var rows int64
	for i := range n {
		res := runETL(t, ctx, newETL(t, db, store, Options{RunID: runID, Shard: i, Shards: n}))
		rows += res.Rows
		_, err := dataset.ReadManifest(ctx, store)
		if i < n-1 {
			if res.Published || !errors.Is(err, dataset.ErrNoDataset) {
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
	if objs, _ := store.List(ctx, dataset.Prefix+"/_runs/"); len(objs) != 0 {
		t.Errorf("staging objects left after publish: %v", objs)
	}
}

func TestETLBadSourceRowsAreRejectedAndCounted(t *testing.T) {
	db, _ := seedtest.DB(t)
	seedtest.Shared(t, db)
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
	res := runETL(t, ctx, newETL(t, db, store, Options{}))
	want := map[string]int64{dataset.RejectRatingOutOfRange: 2, dataset.RejectUnknownProduct: 1, dataset.RejectUnknownCustomer: 1}
	m, rows := readAll(t, ctx, store)
	if fmt.Sprint(m.Rejected) != fmt.Sprint(want) || fmt.Sprint(res.Rejected) != fmt.Sprint(want) {
		t.Fatalf("rejected: manifest %v, result %v, want %v", m.Rejected, res.Rejected, want)
	}
	if m.SourceRows != 2532+3 || m.RunRows != 2531 || len(rows) != 2531 {
		t.Fatalf("source rows %d, run rows %d, read %d", m.SourceRows, m.RunRows, len(rows))
	}
	for _, r := range rows {
		if r.ProductRating < dataset.MinRating || r.ProductRating > dataset.MaxRating {
			t.Fatalf("row with rating %d was written", r.ProductRating)
		}
	}
}

// TestSeedGeneratedThenETL: `batch seed --scale` then `batch etl` publish what the generator
// says its training rows are.
func TestSeedGeneratedThenETL(t *testing.T) {
	db, _ := seedtest.DB(t)
	ctx := testCtx(t)
	g, err := seed.NewGenerator(7, 100, 20)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := seed.NewSeeder(db, seed.DefaultConfig(), nil)
	for _, replace := range []bool{false, true} {
		if err := s.CreateSchema(ctx, replace); err != nil {
			t.Fatal(err)
		}
		st, err := s.LoadGenerated(ctx, g, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Rows["ratings"] != 100*20 || st.Rows["orderdetails"] != 100*20 || st.Rows["customers"] != 100 || st.Rows["payments"] != st.Rows["orders"] {
			t.Fatalf("loaded %v", st.Rows)
		}
	}
	// The generator is consistent: every foreign key resolves (checks were off while loading).
	for _, q := range []string{
		"SELECT COUNT(*) FROM ratings r LEFT JOIN products p ON p.productCode = r.productCode WHERE p.productCode IS NULL",
		"SELECT COUNT(*) FROM customers c LEFT JOIN employees e ON e.employeeNumber = c.salesRepEmployeeNumber WHERE c.salesRepEmployeeNumber IS NOT NULL AND e.employeeNumber IS NULL",
		"SELECT COUNT(*) FROM orderdetails d LEFT JOIN orders o ON o.orderNumber = d.orderNumber WHERE o.orderNumber IS NULL",
		"SELECT COUNT(*) FROM ratings r LEFT JOIN (SELECT DISTINCT o.customerNumber, d.productCode FROM orders o JOIN orderdetails d ON d.orderNumber = o.orderNumber) b ON b.customerNumber = r.customerNumber AND b.productCode = r.productCode WHERE b.productCode IS NULL",
	} {
		var n int
		if err := db.QueryRowContext(ctx, q).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s = %d (%v), want 0", q, n, err)
		}
	}
	store := fileStore(t)
	res := runETL(t, ctx, newETL(t, db, store, Options{}))
	if res.Rows != 2000 || res.Partitions != 100 {
		t.Fatalf("etl of generated data: %+v", res)
	}
	// The generator's own join is what the ETL published.
	_, published := readAll(t, ctx, store)
	var direct []dataset.TrainingRow
	_ = g.EachTrainingRow(ctx, func(r dataset.TrainingRow) error { direct = append(direct, r); return nil })
	if strings.Join(keys(direct), "\n") != strings.Join(keys(published), "\n") {
		t.Fatal("EachTrainingRow differs from the ETL's dataset of the seeded data")
	}
	// Exercise the file roll-over: at most 7 rows per file.
	cfg := DefaultConfig()
	cfg.RowGroupRows = 7
	e, err := New(db, store, cfg, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res = runETL(t, ctx, e)
	m, rows := readAll(t, context.Background(), store)
	if len(rows) != 2000 || res.Files <= 100 {
		t.Fatalf("%d rows in %d files", len(rows), res.Files)
	}
	for _, p := range m.Partitions {
		for _, f := range p.Files {
			if f.Rows > 7 {
				t.Fatalf("file %s has %d rows, row_group_rows is 7", f.Key, f.Rows)
			}
		}
	}
	assertExactlyManifest(t, ctx, store, m)
}
