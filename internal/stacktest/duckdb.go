package stacktest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// DuckDBResult is what scripts/duckdb-query.cjs prints for one statement: column names, DuckDB
// type names ("BIGINT", "VARCHAR", …) and rows as DuckDB converts them to JSON (BIGINT values
// as strings).
type DuckDBResult struct {
	Columns []string         `json:"columns"`
	Types   []string         `json:"types"`
	Rows    []map[string]any `json:"rows"`
}

// DuckDB runs sql in an in-memory DuckDB (the Node.js client scripts/stack.sh installs in the
// stack directory): an engine analysts use, independent of the project's own Parquet code.
// Missing, it fails the test under CI=true and skips it otherwise, like a stopped service.
func DuckDB(t testing.TB, sql string) DuckDBResult {
	t.Helper()
	dir := os.Getenv("RECSTREAM_STACK_DIR")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), ".stack")
	}
	modules := filepath.Join(dir, "duckdb", "node_modules")
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable(t, "DuckDB needs node, which is not installed (scripts/stack.sh up installs it)")
	}
	if _, err := os.Stat(filepath.Join(modules, "@duckdb", "node-api")); err != nil {
		unavailable(t, "DuckDB's Node.js client is not installed in "+modules+" (run scripts/stack.sh up)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(RepoRoot(), "scripts", "duckdb-query.cjs"), sql)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("duckdb %q: %v: %s", sql, err, stderr.String())
	}
	var r DuckDBResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("duckdb %q: decode its output: %v", sql, err)
	}
	return r
}
