package batch

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// testMySQL creates a database of its own on the local MariaDB and drops it in Cleanup.
func testMySQL(t testing.TB) (*sql.DB, MySQLConfig) {
	t.Helper()
	stacktest.MySQLAddr(t)
	name := stacktest.UniqueName("rs_")
	cfg := DefaultMySQLConfig()
	cfg.DSN = stacktest.Value(t, "mysql.dsn")
	cfg.Password = stacktest.DBPassword("RECSTREAM_MYSQL_PASSWORD")
	cfg, err := cfg.WithDatabase(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := EnsureDatabase(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	db, err := OpenMySQL(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(name)); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		db.Close()
	})
	return db, cfg
}

// seedShared loads the real classicmodels data (testdata/classicmodels) into db.
func seedShared(t testing.TB, db *sql.DB) {
	t.Helper()
	dir := stacktest.ClassicModels(t)
	s, err := NewSeeder(db, DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.CreateSchema(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadCSVDir(ctx, dir); err != nil {
		t.Fatal(err)
	}
}

// fileStore is a file:// datalake in a temporary directory.
func fileStore(t testing.TB) objstore.Store {
	t.Helper()
	s, err := objstore.Open("file://"+t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// s3Store is an S3 datalake under a unique prefix of bucket recstream-datalake on the local
// gateway; Cleanup deletes everything under the prefix.
func s3Store(t testing.TB) objstore.Store {
	t.Helper()
	return stacktest.S3Store(t, "datalake", "etltest-")
}
