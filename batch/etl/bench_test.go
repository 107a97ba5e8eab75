package etl

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/recstream/recstream/batch/seed/seedtest"
	"github.com/recstream/recstream/internal/mysqldb"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// BenchmarkETLSharedData is the real dataset end to end: seed once, then one full ETL run
// (query, encode, upload, publish, cleanup) per iteration to file://.
func BenchmarkETLSharedData(b *testing.B) {
	db, _ := seedtest.DB(b)
	seedtest.Shared(b, db)
	store := fileStore(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e, err := New(db, store, DefaultConfig(), Options{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		res, err := e.Run(ctx)
		if err != nil || res.Rows != 2532 {
			b.Fatalf("%v %+v", err, res)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/run")
}

// BenchmarkETLExistingDB runs the ETL against an already seeded database named by
// RECSTREAM_BENCH_DB (e.g. after `recstream batch seed --scale 10000`) to the location in
// RECSTREAM_BENCH_LOCATION (default: a temporary file:// directory). Skipped when unset: the
// generated-data figures come from the CLI (see the README), this is for profiling.
func BenchmarkETLExistingDB(b *testing.B) {
	name := os.Getenv("RECSTREAM_BENCH_DB")
	if name == "" {
		b.Skip("RECSTREAM_BENCH_DB not set")
	}
	stacktest.MySQLAddr(b)
	cfg := mysqldb.DefaultConfig()
	cfg.DSN = stacktest.Value(b, "mysql.dsn")
	cfg.Password = stacktest.DBPassword("RECSTREAM_MYSQL_PASSWORD")
	cfg, _ = cfg.WithDatabase(name)
	db, err := mysqldb.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var store objstore.Store
	if loc := os.Getenv("RECSTREAM_BENCH_LOCATION"); loc == "discard" {
		store = discardStore{}
	} else if loc != "" {
		if store, err = objstore.Open(loc, nil); err != nil {
			b.Fatal(err)
		}
	} else {
		store = fileStore(b)
	}
	b.ResetTimer()
	var rows int64
	start := time.Now()
	for i := 0; i < b.N; i++ {
		e, err := New(db, store, DefaultConfig(), Options{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		res, err := e.Run(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		rows += res.Rows
	}
	b.ReportMetric(float64(rows)/time.Since(start).Seconds(), "rows/s")
}

// discardStore is a Store seam that drops what it is given: it measures the query + encode
// pipeline without storage latency (RECSTREAM_BENCH_LOCATION=discard). Benchmarks only.
type discardStore struct{}

func (discardStore) Put(_ context.Context, _ string, body io.Reader) error {
	_, err := io.Copy(io.Discard, body)
	return err
}
func (discardStore) Get(context.Context, string) (io.ReadCloser, error) {
	return nil, objstore.ErrNotExist
}
func (discardStore) List(context.Context, string) ([]objstore.Object, error) { return nil, nil }
func (discardStore) Delete(context.Context, string) error                    { return nil }
func (discardStore) URL(key string) string                                   { return "discard:///" + key }
