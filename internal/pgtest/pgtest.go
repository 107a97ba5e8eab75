// Package pgtest gives tests a private, migrated PostgreSQL schema on the local stack, so the
// loader, query and worker tests share one way of setting it up and tearing it down.
package pgtest

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recstream/recstream/internal/pg"
	"github.com/recstream/recstream/internal/stacktest"
	schema "github.com/recstream/recstream/sql"
)

// Config returns the local stack's postgres config (config.yaml or RECSTREAM_* overrides) for
// schemaName, which is not created here. It fails (CI) or skips (locally) when PostgreSQL is
// unreachable.
func Config(t testing.TB, schemaName string, efSearch int) pg.Config {
	t.Helper()
	dsn := stacktest.Value(t, "postgres.dsn")
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("postgres.dsn: %v", err)
	}
	stacktest.Require(t, "PostgreSQL", net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port))))
	return pg.Config{DSN: dsn, Password: stacktest.DBPassword("RECSTREAM_POSTGRES_PASSWORD"),
		Schema: schemaName, MaxConns: 8, MinConns: 0, EfSearch: efSearch, MaintenanceWorkMem: "256MB"}
}

// Schema creates a unique schema named prefix + random hex, applies the migrations, drops it in
// Cleanup, and returns its config.
func Schema(t testing.TB, prefix string, efSearch int) pg.Config {
	t.Helper()
	cfg := Config(t, strings.ReplaceAll(stacktest.UniqueName(prefix), "-", "_"), efSearch)
	ctx := context.Background()
	conn, err := pg.ConnectRaw(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := schema.MigratePostgres(ctx, conn, cfg.Schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Drop(t, cfg) })
	return cfg
}

// Drop removes cfg's schema and everything in it.
func Drop(t testing.TB, cfg pg.Config) {
	t.Helper()
	ctx := context.Background()
	c, err := pg.ConnectRaw(ctx, cfg)
	if err != nil {
		t.Errorf("drop schema %s: %v", cfg.Schema, err)
		return
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "DROP SCHEMA IF EXISTS "+cfg.Schema+" CASCADE"); err != nil {
		t.Errorf("drop schema %s: %v", cfg.Schema, err)
	}
}
