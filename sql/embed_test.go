package schema_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/recstream/recstream/internal/pg"
	"github.com/recstream/recstream/internal/pgtest"
	"github.com/recstream/recstream/internal/stacktest"
	schema "github.com/recstream/recstream/sql"
)

func TestPostgresMigrationsAreOrdered(t *testing.T) {
	ms, err := schema.PostgresMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 3 {
		t.Fatalf("%d migrations embedded, want at least 3", len(ms))
	}
	for i, m := range ms {
		if m.Version != i+1 {
			t.Errorf("migration %d is %s: versions must be 1, 2, 3, ... without gaps", i, m.Name)
		}
		if !strings.Contains(m.SQL, "IF NOT EXISTS") {
			t.Errorf("%s: every statement must be idempotent (IF NOT EXISTS)", m.Name)
		}
	}
}

// pgConfig is a config for a fresh schema that the test itself creates by migrating.
func pgConfig(t *testing.T) pg.Config {
	t.Helper()
	return pgtest.Config(t, stacktest.UniqueName("t_mig_"), 40)
}

// Several processes starting at once (the worker and a cron job) apply each migration once,
// the schema is created by the first, and a second run applies nothing.
func TestMigratePostgresConcurrentAndIdempotent(t *testing.T) {
	cfg := pgConfig(t)
	ctx := context.Background()
	t.Cleanup(func() { pgtest.Drop(t, cfg) })
	ms, err := schema.PostgresMigrations()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var all []int
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			conn, err := pg.ConnectRaw(ctx, cfg)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			applied, err := schema.MigratePostgres(ctx, conn, cfg.Schema)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			all = append(all, applied...)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.Sort(all)
	if len(all) != len(ms) {
		t.Fatalf("applied %v across 3 concurrent runs, want each of %d migrations once", all, len(ms))
	}

	conn, err := pg.ConnectRaw(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	again, err := schema.MigratePostgres(ctx, conn, cfg.Schema)
	if err != nil || len(again) != 0 {
		t.Fatalf("second run applied %v, %v; want nothing", again, err)
	}
	// The tables exist in the configured schema, and queries work before the first load.
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+cfg.Schema+".item_emb").Scan(&n); err != nil || n != 0 {
		t.Fatalf("item_emb: %d rows, %v", n, err)
	}
	// An edited applied migration is refused.
	if _, err := conn.Exec(ctx, "UPDATE "+cfg.Schema+".schema_migrations SET sha256 = 'x' WHERE version = 2"); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.MigratePostgres(ctx, conn, cfg.Schema); err == nil || !strings.Contains(err.Error(), "changed after it was applied") {
		t.Fatalf("edited migration: %v, want a refusal", err)
	}
	if _, err := schema.MigratePostgres(ctx, conn, "Bad-Name"); err == nil {
		t.Fatal("schema name Bad-Name accepted")
	}
}
