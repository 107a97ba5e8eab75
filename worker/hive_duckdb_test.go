package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// TestHiveLayoutReadByDuckDB: the worker's output, copied key for key into a directory, read by
// DuckDB with read_parquet(…/**/*.parquet, hive_partitioning = true) and the documented
// hive_types, as an analyst would: year, month, day and hour come out as integer partition
// columns that agree with each
// record's arrival time (UTC), the data columns have the types a user expects, and every
// record is there exactly once. DuckDB is a reader independent of the worker's Parquet code.
func TestHiveLayoutReadByDuckDB(t *testing.T) {
	e := newTestEnv(t, 2)
	const n = 120
	recs := make([][]byte, n)
	for i := range recs {
		recs[i] = event(i, "hive")
	}
	e.put(t, recs)
	e.put(t, [][]byte{[]byte(`{"session_id": 1`)}) // errors/ must not be read as data
	r := start(e.newWorker(t, "hive", testLogger(t), nil))
	e.waitExactlyOnce(t, "hive", n, 90*time.Second)
	if err := r.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}

	// The layout as it is in the bucket, in a directory DuckDB can glob (it reads S3 only
	// through an extension these machines cannot download).
	ctx := context.Background()
	dir := t.TempDir()
	objs, err := e.store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	files := 0
	for _, o := range objs {
		if strings.HasPrefix(o.Key, ErrorsPrefix+"/") {
			continue
		}
		body, err := objstore.ReadAll(ctx, e.store, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(o.Key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
		files++
	}
	if files == 0 {
		t.Fatal("no output objects")
	}
	// The partition values are zero-padded (month=01, hour=07: keys list in time order), which
	// DuckDB's type detection leaves as VARCHAR, while month=12 becomes BIGINT: the types
	// would change with the date. The documented query (README, "Reading the output") names
	// them, so every engine session sees integers.
	src := fmt.Sprintf("read_parquet('%s/**/*.parquet', hive_partitioning = true, "+
		"hive_types = {'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER})", filepath.ToSlash(dir))

	desc := stacktest.DuckDB(t, "DESCRIBE SELECT * FROM "+src)
	types := map[string]string{}
	for _, row := range desc.Rows {
		types[fmt.Sprint(row["column_name"])] = fmt.Sprint(row["column_type"])
	}
	want := map[string]string{
		"year": "INTEGER", "month": "INTEGER", "day": "INTEGER", "hour": "INTEGER",
		"session_id": "VARCHAR", "customer_number": "BIGINT", "city": "VARCHAR", "country": "VARCHAR",
		"credit_limit": "DOUBLE", "shard_id": "VARCHAR", "sequence_number": "VARCHAR",
		"sub_sequence_number": "BIGINT", "model_version": "VARCHAR",
	}
	for col, typ := range want {
		if types[col] != typ {
			t.Errorf("column %s: DuckDB type %q, want %q (all: %v)", col, types[col], typ, types)
		}
	}
	if !strings.HasPrefix(types["arrival_time"], "TIMESTAMP") {
		t.Errorf("arrival_time: DuckDB type %q, want a TIMESTAMP", types["arrival_time"])
	}
	for _, col := range []string{"browse_history", "recommended_items", "similar_items"} {
		if types[col] == "" {
			t.Errorf("column %s missing (all: %v)", col, types)
		}
	}

	rows := stacktest.DuckDB(t, "SELECT session_id, year, month, day, hour, epoch_ms(arrival_time) AS ms FROM "+src)
	seen := map[string]int{}
	for _, row := range rows.Rows {
		id := fmt.Sprint(row["session_id"])
		seen[id]++
		ms, err := strconv.ParseInt(fmt.Sprint(row["ms"]), 10, 64)
		if err != nil {
			t.Fatalf("%s: arrival time %v: %v", id, row["ms"], err)
		}
		at := time.UnixMilli(ms).UTC()
		got := fmt.Sprint(row["year"], "-", row["month"], "-", row["day"], " ", row["hour"])
		if exp := fmt.Sprint(at.Year(), "-", int(at.Month()), "-", at.Day(), " ", at.Hour()); got != exp {
			t.Errorf("%s: partition %s, arrival time %s (want partition %s)", id, got, at, exp)
		}
	}
	for i := range n {
		if id := fmt.Sprintf("hive-%06d", i); seen[id] != 1 {
			t.Errorf("%s read %d times by DuckDB, want 1", id, seen[id])
		}
	}
	if len(seen) != n {
		t.Errorf("DuckDB read %d distinct sessions, want %d", len(seen), n)
	}
}
