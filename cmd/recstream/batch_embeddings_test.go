package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/pg"
	"github.com/recstream/recstream/internal/pgtest"
	"github.com/recstream/recstream/internal/stacktest"
)

// liveEmbeddingsVersion is the live version in schema, "" when none (or no schema yet).
func liveEmbeddingsVersion(t *testing.T, cfg pg.Config) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pg.ConnectRaw(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", cfg.Schema+".embedding_versions").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		return ""
	}
	var v string
	err = conn.QueryRow(ctx, "SELECT version FROM "+pgx.Identifier{cfg.Schema, "embedding_versions"}.Sanitize()+" WHERE state = 'live'").Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func writeEmbeddingsDir(t *testing.T, dir string, items, users string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "embeddings"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"item_embeddings.csv": items, "user_embeddings.csv": users} {
		if err := os.WriteFile(filepath.Join(dir, "embeddings", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBatchEmbeddingsRefusesVersionsWithoutModel drives `batch embeddings` through main's run
// against PostgreSQL: bare CSVs (--from DIR) are refused with exit 2 and the reason unless
// --without-model; a version of the artifacts bucket whose model is missing is refused the same
// way and nothing live changes; once `train` has published a model, the default load works.
func TestBatchEmbeddingsRefusesVersionsWithoutModel(t *testing.T) {
	schema := strings.ReplaceAll(stacktest.UniqueName("rs_embcli_"), "-", "_")
	pcfg := pgtest.Config(t, schema, 100)
	t.Cleanup(func() { pgtest.Drop(t, pcfg) })
	arts, bare := t.TempDir(), t.TempDir()
	env := []string{
		"RECSTREAM_POSTGRES_PASSWORD=" + pcfg.Password,
		"RECSTREAM_POSTGRES_SCHEMA=" + schema,
		"RECSTREAM_S3_BUCKETS_ARTIFACTS=file://" + arts,
	}
	items := "id,embedding\nS10_1678,\"[0.1,0.2,0.3,0.4]\"\nS10_1949,\"[0.4,0.3,0.2,0.1]\"\nS10_2016,\"[0.5,0.5,0.5,0.5]\"\n"
	users := "id,embedding\n103,\"[0.1,0.1,0.1,0.1]\"\n112,\"[0.2,0.2,0.2,0.2]\"\n"
	writeEmbeddingsDir(t, bare, items, users)

	code, stdout, stderr := batchCLI(env, "batch", "embeddings", "--from", "file://"+bare)
	if code != exitUsage || !strings.Contains(stderr, "--without-model") || !strings.Contains(stderr, "cannot answer") {
		t.Fatalf("--from DIR: exit %d\nstdout: %s\nstderr: %s\nwant exit %d explaining --without-model", code, stdout, stderr, exitUsage)
	}
	if v := liveEmbeddingsVersion(t, pcfg); v != "" {
		t.Fatalf("refused load made %s live", v)
	}
	if code, _, stderr := batchCLI(env, "batch", "embeddings", "--from", "file://"+bare, "--version", "m-0123456789ab"); code != exitUsage || !strings.Contains(stderr, "--from takes no --version") {
		t.Fatalf("--from with --version: exit %d, stderr %s", code, stderr)
	}

	code, stdout, stderr = batchCLI(env, "batch", "embeddings", "--from", "file://"+bare, "--without-model")
	m := regexp.MustCompile(`loaded embeddings version (sha-[0-9a-f]{12}):`).FindStringSubmatch(stdout)
	if code != exitOK || m == nil || !strings.Contains(stdout, "without a model check") {
		t.Fatalf("--from DIR --without-model: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if v := liveEmbeddingsVersion(t, pcfg); v != m[1] {
		t.Fatalf("live version %q, want %s", v, m[1])
	}

	// The artifacts bucket holds v9's embeddings but not its model.
	writeEmbeddingsDir(t, filepath.Join(arts, filepath.FromSlash(artifacts.VersionPrefix("v9"))), items, users)
	code, stdout, stderr = batchCLI(env, "batch", "embeddings", "--version", "v9")
	if code != exitUsage || !strings.Contains(stderr, "best_model.safetensors does not exist") || !strings.Contains(stderr, "--without-model") {
		t.Fatalf("version without model: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if v := liveEmbeddingsVersion(t, pcfg); v != m[1] {
		t.Fatalf("refused load changed the live version to %q", v)
	}

	// A trained version has its model: the default load (latest) works.
	out := runCLI(t, env, "train", "--csv", stacktest.LabFile(t, "ratings_ml_training_dataset.csv"), "--epochs", "1")
	pm := publishedRe.FindStringSubmatch(out)
	if pm == nil {
		t.Fatalf("train output:\n%s", out)
	}
	if out := runCLI(t, env, "batch", "embeddings"); !strings.Contains(out, "loaded embeddings version "+pm[1]) || strings.Contains(out, "without a model") {
		t.Fatalf("batch embeddings after train:\n%s", out)
	}
	if v := liveEmbeddingsVersion(t, pcfg); v != pm[1] {
		t.Fatalf("live version %q, want %s", v, pm[1])
	}
}
