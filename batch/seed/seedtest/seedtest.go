// Package seedtest gives tests a private classicmodels source database on the local MariaDB,
// empty or seeded, so the seed and etl tests share one way of setting it up and tearing it
// down.
package seedtest

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/recstream/recstream/batch/seed"
	"github.com/recstream/recstream/internal/mysqldb"
	"github.com/recstream/recstream/internal/stacktest"
)

// DB creates a database of its own on the local MariaDB, drops it in Cleanup, and returns a
// pool for it and its config. It fails (CI) or skips (locally) when MariaDB is unreachable.
func DB(t testing.TB) (*sql.DB, mysqldb.Config) {
	t.Helper()
	stacktest.MySQLAddr(t)
	name := stacktest.UniqueName("rs_")
	cfg := mysqldb.DefaultConfig()
	cfg.DSN = stacktest.Value(t, "mysql.dsn")
	cfg.Password = stacktest.DBPassword("RECSTREAM_MYSQL_PASSWORD")
	cfg, err := cfg.WithDatabase(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := mysqldb.EnsureDatabase(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	db, err := mysqldb.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+mysqldb.QuoteIdent(name)); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		db.Close()
	})
	return db, cfg
}

// Shared loads the real classicmodels data (testdata/classicmodels) into db.
func Shared(t testing.TB, db *sql.DB) {
	t.Helper()
	dir := stacktest.ClassicModels(t)
	s, err := seed.NewSeeder(db, seed.DefaultConfig(), nil)
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

// Generated (re)creates the schema in db and loads g.
func Generated(t testing.TB, ctx context.Context, db *sql.DB, g *seed.Generator) {
	t.Helper()
	s, err := seed.NewSeeder(db, seed.DefaultConfig(), nil)
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
