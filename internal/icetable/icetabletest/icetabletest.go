// Package icetabletest sets up an Iceberg table on the local stack (the SQL catalog in a
// PostgreSQL schema of its own, the warehouse under a prefix of the recommendations bucket)
// and reads it back with icespec, independently of iceberg-go.
package icetabletest

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/apache/iceberg-go/catalog"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/parquet-go/parquet-go"

	"github.com/recstream/recstream/internal/icetable"
	"github.com/recstream/recstream/internal/icetable/icespec"
	"github.com/recstream/recstream/internal/pgtest"
	"github.com/recstream/recstream/internal/stacktest"
)

// Env is one test's table environment.
type Env struct {
	Config    icetable.Config
	Warehouse string
	PGDSN     string
	PGPass    string
	S3        *s3.Client `json:"-"` // set by New, or by Connect in a child process
}

// Connect sets the env's S3 client (after the env crossed a process boundary as JSON) and
// registers the warehouse's bucket with icetable.
func (e *Env) Connect(client *s3.Client) error {
	u, err := url.Parse(e.Warehouse)
	if err != nil {
		return err
	}
	e.S3 = client
	icetable.RegisterBucket(u.Host, client)
	return nil
}

// Open opens the catalog and a committer on the env's table; run it with Run and close the
// catalog with the returned func when done.
func (e Env) Open(ctx context.Context) (*icetable.Committer, func() error, error) {
	cat, closeCat, err := icetable.Catalog(ctx, e.Config, e.PGDSN, e.PGPass, e.Warehouse)
	if err != nil {
		return nil, nil, err
	}
	c, err := icetable.NewCommitter(ctx, cat, e.Config, e.Warehouse, nil)
	if err != nil {
		closeCat()
		return nil, nil, err
	}
	return c, closeCat, nil
}

// New makes a unique catalog schema and warehouse prefix (both removed in Cleanup) and
// registers the bucket with icetable.
func New(t testing.TB) Env {
	t.Helper()
	store := stacktest.S3Store(t, "recommendations", "iceberg-")
	client := stacktest.S3Client(t)
	wh := strings.TrimSuffix(store.URL(""), "/")
	u, err := url.Parse(wh)
	if err != nil {
		t.Fatal(err)
	}
	icetable.RegisterBucket(u.Host, client)
	pgc := pgtest.Config(t, strings.ReplaceAll(stacktest.UniqueName("icecat_"), "-", "_"), 40)
	t.Cleanup(func() { pgtest.Drop(t, pgc) })
	cfg := icetable.DefaultConfig()
	cfg.SQL.Schema = pgc.Schema
	cfg.CommitInterval = 200 * time.Millisecond
	return Env{Config: cfg, Warehouse: wh, PGDSN: pgc.DSN, PGPass: pgc.Password, S3: client}
}

// Committer opens the catalog and a committer on the env's table, running until Cleanup.
func (e Env) Committer(t testing.TB) *icetable.Committer {
	t.Helper()
	ctx := context.Background()
	c, closeCat, err := e.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done; closeCat() })
	return c
}

// Catalog opens the env's catalog for the rest of the test (what compact and replay are given).
func (e Env) Catalog(t testing.TB) catalog.Catalog {
	t.Helper()
	cat, closeCat, err := icetable.Catalog(context.Background(), e.Config, e.PGDSN, e.PGPass, e.Warehouse)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closeCat() })
	return cat
}

// MetadataLocation reads the table's current metadata.json location from the catalog's table
// in PostgreSQL (plain SQL: the JDBC catalog layout).
func (e Env) MetadataLocation(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	cc, err := pgx.ParseConfig(e.PGDSN)
	if err != nil {
		t.Fatal(err)
	}
	cc.Password = e.PGPass
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var loc string
	q := fmt.Sprintf(`SELECT metadata_location FROM %s.iceberg_tables WHERE table_namespace = $1 AND table_name = $2`, e.Config.SQL.Schema)
	if err := conn.QueryRow(ctx, q, e.Config.Namespace, e.Config.Name).Scan(&loc); err != nil {
		t.Fatalf("catalog row of %s.%s: %v", e.Config.Namespace, e.Config.Name, err)
	}
	return loc
}

// Read reads a whole object by its s3:// location.
func (e Env) Read(location string) ([]byte, error) {
	u, err := url.Parse(location)
	if err != nil {
		return nil, err
	}
	key := strings.TrimPrefix(u.Path, "/")
	out, err := e.S3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &u.Host, Key: &key})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", location, err)
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

// Snapshot is what the independent reader sees at the table's current snapshot.
type Snapshot struct {
	Metadata icespec.Metadata
	Files    []icespec.DataFile
}

// ReadTable reads the current snapshot's live data files through icespec.
func (e Env) ReadTable(t testing.TB) Snapshot {
	t.Helper()
	b, err := e.Read(e.MetadataLocation(t))
	if err != nil {
		t.Fatal(err)
	}
	m, err := icespec.ParseMetadata(b)
	if err != nil {
		t.Fatal(err)
	}
	files, err := icespec.LiveFiles(e.Read, m)
	if err != nil {
		t.Fatal(err)
	}
	return Snapshot{Metadata: m, Files: files}
}

// Rows reads every row of the live data files with parquet-go into T (a struct with the
// table's column names), checking each file's row count against its manifest entry.
func ReadRows[T any](t testing.TB, e Env, s Snapshot) []T {
	t.Helper()
	var out []T
	for _, f := range s.Files {
		b, err := e.Read(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := parquet.Read[T](bytesReaderAt(b), int64(len(b)))
		if err != nil {
			t.Fatalf("read %s: %v", f.Path, err)
		}
		if int64(len(rows)) != f.Records {
			t.Fatalf("%s: %d rows, manifest says %d", f.Path, len(rows), f.Records)
		}
		out = append(out, rows...)
	}
	return out
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
