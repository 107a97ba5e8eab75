package main

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/batch/etl"
	"github.com/recstream/recstream/internal/mysqldb"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// batchCLI runs one command line against the repository's config.yaml with env and returns the
// exit code, stdout and stderr (where the logs go).
func batchCLI(env []string, args ...string) (int, string, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	full := append([]string{"--config", "../../config.yaml", "--log-format", "json"}, args...)
	code := run(ctx, full, env, &out, &errb)
	return code, out.String(), errb.String()
}

// testMySQL returns the local stack's MySQL config for a database of its own (created by the
// first `batch seed`, dropped on cleanup) and a pool for it.
func testMySQL(t *testing.T, prefix string) (mysqldb.Config, *sql.DB) {
	t.Helper()
	stacktest.MySQLAddr(t)
	cfg := mysqldb.DefaultConfig()
	cfg.DSN = stacktest.Value(t, "mysql.dsn")
	cfg.Password = stacktest.DBPassword("RECSTREAM_MYSQL_PASSWORD")
	name := stacktest.UniqueName(prefix)
	cfg, err := cfg.WithDatabase(name)
	if err != nil {
		t.Fatal(err)
	}
	db, err := mysqldb.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := db.Exec("DROP DATABASE IF EXISTS `" + name + "`"); err != nil {
			t.Errorf("cleanup: drop database %s: %v", name, err)
		}
		db.Close()
	})
	return cfg, db
}

func mustDatabase(t *testing.T, cfg mysqldb.Config) string {
	t.Helper()
	name, err := mysqldb.Database(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// TestBatchSeedAndETLCommands drives `batch seed` and `batch etl` through main's run: exit
// codes 0 / 2 / 3, the dry-run plan, the final log line and the published manifest.
func TestBatchSeedAndETLCommands(t *testing.T) {
	data := stacktest.ClassicModels(t)
	cfg, db := testMySQL(t, "rs_cli_")
	env := []string{"RECSTREAM_MYSQL_DSN=" + cfg.DSN, "RECSTREAM_MYSQL_PASSWORD=" + cfg.Password}
	lake := t.TempDir()
	loc := "file://" + lake

	if code, _, stderr := batchCLI(env, "batch", "seed", "--from", data); code != exitOK || !strings.Contains(stderr, `"rows_ratings":2532`) {
		t.Fatalf("seed: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := batchCLI(env, "batch", "seed", "--from", data); code != exitUsage || !strings.Contains(stderr, "--replace") {
		t.Fatalf("second seed without --replace: exit %d, want %d\n%s", code, exitUsage, stderr)
	}
	if code, _, stderr := batchCLI(env, "batch", "seed", "--scale", "50", "--ratings-per-customer", "10", "--replace"); code != exitOK || !strings.Contains(stderr, `"rows_ratings":500`) {
		t.Fatalf("seed --scale --replace: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := batchCLI(env, "batch", "seed", "--from", data, "--replace"); code != exitOK {
		t.Fatalf("seed --from --replace: exit %d\n%s", code, stderr)
	}

	code, out, stderr := batchCLI(env, "batch", "etl", "--location", loc, "--dry-run")
	if code != exitOK || !strings.Contains(out, "2532 ratings over 98 customers") {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, out, stderr)
	}
	if entries, _ := os.ReadDir(lake); len(entries) != 0 {
		t.Fatalf("dry run wrote %d entries", len(entries))
	}

	code, _, stderr = batchCLI(env, "batch", "etl", "--location", loc)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	final := lines[len(lines)-1]
	if code != exitOK || !strings.Contains(final, `"msg":"etl finished"`) || !strings.Contains(final, `"rows":2532`) || !strings.Contains(final, `"partitions":98`) || !strings.Contains(final, `"bytes":`) || !strings.Contains(final, `"duration":`) {
		t.Fatalf("etl: exit %d, final line %s", code, final)
	}
	if _, err := os.Stat(filepath.Join(lake, dataset.ManifestKey)); err != nil {
		t.Fatalf("no manifest: %v", err)
	}

	// Overlap: a run holds the lock; the second exits 3 naming the holder.
	store, err := objstore.Open(loc, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got int
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", etl.LockName(mustDatabase(t, cfg), store, 0, 1)).Scan(&got); err != nil || got != 1 {
		t.Fatalf("take lock: %d %v", got, err)
	}
	code, _, stderr = batchCLI(env, "batch", "etl", "--location", loc)
	if code != exitLocked || !strings.Contains(stderr, "holds lock") || !strings.Contains(stderr, "MySQL connection") {
		t.Fatalf("overlapping etl: exit %d, want %d\n%s", code, exitLocked, stderr)
	}

	for _, args := range [][]string{
		{"batch", "etl", "--shard", "2/2"},
		{"batch", "etl", "--shard", "0/2"},
		{"batch", "etl", "--shard", "x"},
		{"batch", "etl", "--location", "ftp://x"},
		{"batch", "seed"},
		{"batch", "seed", "--from", data, "--scale", "5"},
	} {
		if code, _, stderr := batchCLI(env, args...); code != exitUsage {
			t.Errorf("%s: exit %d, want %d\n%s", strings.Join(args, " "), code, exitUsage, stderr)
		}
	}
}
