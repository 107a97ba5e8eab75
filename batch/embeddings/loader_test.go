package embeddings_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgvector/pgvector-go"
	"go.uber.org/zap/zaptest"

	"github.com/recstream/recstream/batch/embeddings"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/pg"
	"github.com/recstream/recstream/internal/pgtest"
	"github.com/recstream/recstream/internal/stacktest"
)

// embSet is one generated embeddings version.
type embSet struct {
	items   map[string][]float32
	itemIDs []string
	users   map[int][]float32
	userIDs []int
}

// genEmbeddings makes n items and m users of dimension d, deterministically from seed. When
// marker != 0 every item vector's first value is marker, so a query along the first axis
// scores every item exactly marker (readers use it to tell versions apart).
func genEmbeddings(seed uint64, n, m, d int, marker float32) embSet {
	r := rand.New(rand.NewPCG(seed, 7))
	s := embSet{items: map[string][]float32{}, users: map[int][]float32{}}
	vec := func() []float32 {
		v := make([]float32, d)
		for i := range v {
			v[i] = float32(r.NormFloat64() * 0.3)
		}
		return v
	}
	for i := range n {
		id := fmt.Sprintf("S%d_%04d", 10+i%90, 1000+i)
		v := vec()
		if marker != 0 {
			v[0] = marker
		}
		s.items[id], s.itemIDs = v, append(s.itemIDs, id)
	}
	for i := range m {
		id := 103 + i
		s.users[id], s.userIDs = vec(), append(s.userIDs, id)
	}
	return s
}

func formatVec(v []float32) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatFloat(float64(x), 'g', -1, 32)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func (s embSet) csvs() (items, users []byte) {
	var b bytes.Buffer
	b.WriteString("id,embedding\n")
	for _, id := range s.itemIDs {
		fmt.Fprintf(&b, "%s,\"%s\"\n", id, formatVec(s.items[id]))
	}
	items = append([]byte(nil), b.Bytes()...)
	b.Reset()
	b.WriteString("id,embedding\n")
	for _, id := range s.userIDs {
		fmt.Fprintf(&b, "%d,\"%s\"\n", id, formatVec(s.users[id]))
	}
	return items, b.Bytes()
}

// writeDir writes the two CSVs under dir/embeddings/ and returns a file:// source. Generated
// vectors have no model: the source says so (WithoutModel), like `--from DIR --without-model`.
func writeDir(t *testing.T, dir string, items, users []byte) embeddings.Source {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "embeddings"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "embeddings", "item_embeddings.csv"), items, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "embeddings", "user_embeddings.csv"), users, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := objstore.Open("file://"+dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return embeddings.Source{Store: st, WithoutModel: true}
}

// testPG creates a unique schema, migrates it, and returns its config and a pool.
func testPG(t *testing.T) (pg.Config, *pgxpool.Pool) {
	t.Helper()
	cfg := pgtest.Schema(t, "t_emb_", 100)
	pool, err := pg.Connect(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return cfg, pool
}

func newLoader(t *testing.T, pool *pgxpool.Pool, cfg pg.Config) *embeddings.Loader {
	t.Helper()
	l, err := embeddings.NewLoader(pool, cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// readBack returns the live tables' contents.
// The embedding column's type carries the dimension, so a statement prepared before a
// dimension change must not be reused: describe on every execution.
func readBack(t *testing.T, pool *pgxpool.Pool) embSet {
	t.Helper()
	ctx := context.Background()
	s := embSet{items: map[string][]float32{}, users: map[int][]float32{}}
	rows, _ := pool.Query(ctx, "SELECT id, embedding FROM item_emb ORDER BY id", pgx.QueryExecModeDescribeExec)
	var id string
	var v pgvector.Vector
	if _, err := pgx.ForEachRow(rows, []any{&id, &v}, func() error {
		s.items[id], s.itemIDs = v.Slice(), append(s.itemIDs, id)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rows, _ = pool.Query(ctx, "SELECT id, embedding FROM user_emb ORDER BY id", pgx.QueryExecModeDescribeExec)
	var uid int
	if _, err := pgx.ForEachRow(rows, []any{&uid, &v}, func() error {
		s.users[uid], s.userIDs = v.Slice(), append(s.userIDs, uid)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

func equalSets(t *testing.T, got, want embSet) {
	t.Helper()
	if len(got.items) != len(want.items) || len(got.users) != len(want.users) {
		t.Fatalf("read back %d items / %d users, want %d / %d", len(got.items), len(got.users), len(want.items), len(want.users))
	}
	for id, w := range want.items {
		g := got.items[id]
		if len(g) != len(w) {
			t.Fatalf("item %s: %d values, want %d", id, len(g), len(w))
		}
		for i := range w {
			if g[i] != w[i] {
				t.Fatalf("item %s value %d: %v, want %v", id, i, g[i], w[i])
			}
		}
	}
	for id, w := range want.users {
		g := got.users[id]
		for i := range w {
			if len(g) != len(w) || g[i] != w[i] {
				t.Fatalf("user %d: %v, want %v", id, g, w)
			}
		}
	}
}

type versionRow struct {
	Version string
	State   string
	Dim     int
}

func versions(t *testing.T, pool *pgxpool.Pool) []versionRow {
	t.Helper()
	rows, _ := pool.Query(context.Background(), "SELECT version, state, dimension FROM embedding_versions ORDER BY id")
	vs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (versionRow, error) {
		var v versionRow
		return v, r.Scan(&v.Version, &v.State, &v.Dim)
	})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestLoadRoundTripNoOpForceAndRollback(t *testing.T) {
	cfg, pool := testPG(t)
	l := newLoader(t, pool, cfg)
	ctx := context.Background()

	v1 := genEmbeddings(1, 110, 98, 32, 0)
	items, users := v1.csvs()
	src := writeDir(t, t.TempDir(), items, users)
	res, err := l.Load(ctx, src, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.NoOp || res.Dimension != 32 || res.ItemRows != 110 || res.UserRows != 98 || !strings.HasPrefix(res.Version, "sha-") {
		t.Fatalf("first load: %+v", res)
	}
	// Round trip: what is read back equals the CSV to float32 precision (bit for bit).
	equalSets(t, readBack(t, pool), v1)

	// The same files again: detected by checksum, nothing changes.
	again, err := l.Load(ctx, src, false)
	if err != nil {
		t.Fatal(err)
	}
	if !again.NoOp || again.Version != res.Version {
		t.Fatalf("second load of the same files: %+v, want NoOp of %s", again, res.Version)
	}
	if vs := versions(t, pool); len(vs) != 1 || vs[0].State != "live" {
		t.Fatalf("versions after no-op: %+v", vs)
	}
	// --force reloads them.
	forced, err := l.Load(ctx, src, true)
	if err != nil || forced.NoOp {
		t.Fatalf("forced load: %+v, %v", forced, err)
	}
	if vs := versions(t, pool); len(vs) != 2 || vs[0].State != "previous" || vs[1].State != "live" {
		t.Fatalf("versions after forced load: %+v", vs)
	}

	// Dimension change 32 → 64 is a reload like any other.
	v2 := genEmbeddings(2, 120, 50, 64, 0)
	items2, users2 := v2.csvs()
	res2, err := l.Load(ctx, writeDir(t, t.TempDir(), items2, users2), false)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Dimension != 64 {
		t.Fatalf("dimension change: %+v", res2)
	}
	equalSets(t, readBack(t, pool), v2)
	vs := versions(t, pool)
	if len(vs) != 3 || vs[0].State != "retired" || vs[1].State != "previous" || vs[2].State != "live" || vs[2].Dim != 64 {
		t.Fatalf("versions after dimension change: %+v", vs)
	}

	// Rollback brings the 32-dimension version back; a second rollback undoes the first.
	rb, err := l.Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rb.Version != res.Version || rb.Dimension != 32 {
		t.Fatalf("rollback: %+v, want version %s", rb, res.Version)
	}
	equalSets(t, readBack(t, pool), v1)
	if _, err := l.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	equalSets(t, readBack(t, pool), v2)
}

func TestRollbackWithoutPrevious(t *testing.T) {
	cfg, pool := testPG(t)
	l := newLoader(t, pool, cfg)
	if _, err := l.Rollback(context.Background()); !errors.Is(err, embeddings.ErrNoPreviousVersion) {
		t.Fatalf("rollback on a fresh schema: %v, want ErrNoPreviousVersion", err)
	}
	v1 := genEmbeddings(1, 5, 5, 4, 0)
	items, users := v1.csvs()
	if _, err := l.Load(context.Background(), writeDir(t, t.TempDir(), items, users), false); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Rollback(context.Background()); !errors.Is(err, embeddings.ErrNoPreviousVersion) {
		t.Fatalf("rollback after the first load: %v, want ErrNoPreviousVersion", err)
	}
	equalSets(t, readBack(t, pool), v1)
}

// Every bad-input class aborts before the swap with file and line, and the live tables keep
// the previous version.
func TestLoadRejectsBadInput(t *testing.T) {
	cfg, pool := testPG(t)
	l := newLoader(t, pool, cfg)
	ctx := context.Background()
	good := genEmbeddings(3, 20, 10, 8, 0)
	gi, gu := good.csvs()
	live, err := l.Load(ctx, writeDir(t, t.TempDir(), gi, gu), false)
	if err != nil {
		t.Fatal(err)
	}
	itemsWith := func(extra string) []byte { return append(append([]byte(nil), gi...), extra...) }
	cases := []struct {
		name   string
		items  []byte
		users  []byte
		file   string
		line   int
		reason string
	}{
		{"short vector", itemsWith("S99_9999,\"[1,2,3]\"\n"), gu, "item_embeddings.csv", 22, "has 3 values, want 8"},
		{"NaN", itemsWith("S99_9999,\"[1,2,3,4,5,6,7,NaN]\"\n"), gu, "item_embeddings.csv", 22, "not a finite float32"},
		{"Inf", itemsWith("S99_9999,\"[1,2,3,4,5,6,7,Infinity]\"\n"), gu, "item_embeddings.csv", 22, "not a finite float32"},
		{"text in vector", itemsWith("S99_9999,\"[1,2,3,4,five,6,7,8]\"\n"), gu, "item_embeddings.csv", 22, `value 5: "five"`},
		{"duplicate id", itemsWith("S10_1000,\"[1,2,3,4,5,6,7,8]\"\n"), gu, "item_embeddings.csv", 22, `duplicate id "S10_1000" (first at line 2)`},
		{"wrong header", append([]byte("id,vector\n"), gi[len("id,embedding\n"):]...), gu, "item_embeddings.csv", 1, "header must be"},
		{"empty file", []byte{}, gu, "item_embeddings.csv", 1, "empty file"},
		{"user dimension differs from items", gi, []byte("id,embedding\n103,\"[1,2]\"\n"), "user_embeddings.csv", 2, "has 2 values, want 8 (the dimension of the item embeddings)"},
		{"user duplicate", gi, append(append([]byte(nil), gu...), "103,\"[1,2,3,4,5,6,7,8]\"\n"...), "user_embeddings.csv", 12, "duplicate id 103"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Load(ctx, writeDir(t, t.TempDir(), tc.items, tc.users), false)
			var ie *embeddings.InputError
			if !errors.As(err, &ie) {
				t.Fatalf("load: %v, want *InputError", err)
			}
			if !strings.HasSuffix(ie.File, tc.file) || ie.Line != tc.line || !strings.Contains(ie.Reason, tc.reason) {
				t.Fatalf("load: %v, want %s line %d: %s", err, tc.file, tc.line, tc.reason)
			}
			equalSets(t, readBack(t, pool), good)
			if vs := versions(t, pool); len(vs) != 1 || vs[0].Version != live.Version || vs[0].State != "live" {
				t.Fatalf("versions changed: %+v", vs)
			}
		})
	}
	// BOM and CR LF are accepted: the same vectors load (as a new version: other bytes).
	bomCRLF := func(b []byte) []byte {
		return append([]byte("\xEF\xBB\xBF"), bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))...)
	}
	res, err := l.Load(ctx, writeDir(t, t.TempDir(), bomCRLF(gi), bomCRLF(gu)), false)
	if err != nil || res.NoOp || res.Version == live.Version {
		t.Fatalf("BOM + CR LF load: %+v, %v", res, err)
	}
	equalSets(t, readBack(t, pool), good)
}

func TestLoadInProgress(t *testing.T) {
	cfg, pool := testPG(t)
	l := newLoader(t, pool, cfg)
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// The same two-key lock another loader process would hold.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1, hashtext($2))", 0x656d6264, cfg.Schema); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "SELECT pg_advisory_unlock_all()")
	g := genEmbeddings(1, 3, 3, 2, 0)
	gi, gu := g.csvs()
	if _, err := l.Load(ctx, writeDir(t, t.TempDir(), gi, gu), false); !errors.Is(err, embeddings.ErrLoadInProgress) {
		t.Fatalf("load while locked: %v, want ErrLoadInProgress", err)
	}
}

// putModel writes the model files of version (placeholder weights and scalers: the loader
// checks that they exist, inference.LoadModel what they hold) and a card recording sums.
func putModel(t *testing.T, root objstore.Store, version string, sums map[string]string) {
	t.Helper()
	card, err := json.Marshal(map[string]any{"version": version, "files": sums})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range artifacts.ModelKeys() {
		body := []byte("{}")
		if k == artifacts.ModelCardKey {
			body = card
		}
		if err := root.Put(context.Background(), artifacts.Key(version, k), bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// The artifacts layout on the real S3 gateway: versions/<v>/embeddings/... and latest.json,
// written last. A version whose model is missing is refused before anything is read; once the
// model is there, loading through the pointer records the artifacts version's name.
func TestEmbeddingsLoadFromS3LatestPointer(t *testing.T) {
	root := stacktest.S3Store(t, "artifacts", "test-embeddings-")
	cfg, pool := testPG(t)
	l := newLoader(t, pool, cfg)
	ctx := context.Background()
	g := genEmbeddings(5, 110, 98, 32, 0)
	gi, gu := g.csvs()
	for key, body := range map[string][]byte{
		artifacts.Key("v20261125-1", artifacts.ItemEmbeddingsKey): gi,
		artifacts.Key("v20261125-1", artifacts.UserEmbeddingsKey): gu,
		artifacts.LatestKey: []byte(`{"version": "v20261125-1", "prefix": "versions/v20261125-1"}`),
	} {
		if err := root.Put(ctx, key, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	src, err := embeddings.ResolveArtifactsVersion(ctx, root, "latest")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Load(ctx, src, false); !errors.Is(err, embeddings.ErrNoModel) || !errors.Is(err, artifacts.ErrNoModel) ||
		!strings.Contains(err.Error(), root.URL(artifacts.Key("v20261125-1", artifacts.ModelKey))) {
		t.Fatalf("load of a version without its model: %v, want ErrNoModel naming the weights", err)
	}
	if vs := versions(t, pool); len(vs) != 0 {
		t.Fatalf("refused load recorded versions %+v", vs)
	}
	putModel(t, root, "v20261125-1", map[string]string{artifacts.ItemEmbeddingsKey: sha256Hex(gi), artifacts.UserEmbeddingsKey: sha256Hex(gu)})
	res, err := l.Load(ctx, src, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != "v20261125-1" {
		t.Fatalf("version = %q, want the artifacts version", res.Version)
	}
	equalSets(t, readBack(t, pool), g)
	var itemSource string
	if err := pool.QueryRow(ctx, "SELECT item_source FROM embedding_versions WHERE state = 'live'").Scan(&itemSource); err != nil {
		t.Fatal(err)
	}
	if want := root.URL(artifacts.Key("v20261125-1", artifacts.ItemEmbeddingsKey)); itemSource != want {
		t.Fatalf("item_source = %q, want %q", itemSource, want)
	}
	// A named version resolves without the pointer; a missing one fails naming the version.
	if _, err := embeddings.ResolveArtifactsVersion(ctx, root, "../x"); err == nil {
		t.Fatal("version ../x accepted")
	}
	missing, _ := embeddings.ResolveArtifactsVersion(ctx, root, "v-missing")
	if _, err := l.Load(ctx, missing, false); !errors.Is(err, embeddings.ErrNoModel) || !strings.Contains(err.Error(), "v-missing") {
		t.Fatalf("load of a missing version: %v", err)
	}
	missing.WithoutModel = true
	if _, err := l.Load(ctx, missing, false); !errors.Is(err, objstore.ErrNotExist) || !strings.Contains(err.Error(), "v-missing") {
		t.Fatalf("load of a missing version without the model check: %v", err)
	}
}

// The model check guards every way in: bare CSVs (a checksum-named version, never published)
// are refused unless WithoutModel; embeddings other than the ones the version's model card
// records are refused; a refused load changes nothing live.
func TestEmbeddingsLoadRefusesVersionWithoutModel(t *testing.T) {
	root, err := objstore.Open("file://"+t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, pool := testPG(t)
	l := newLoader(t, pool, cfg)
	ctx := context.Background()
	g1 := genEmbeddings(11, 20, 10, 8, 0)
	gi, gu := g1.csvs()
	live, err := l.Load(ctx, writeDir(t, t.TempDir(), gi, gu), false)
	if err != nil {
		t.Fatal(err)
	}
	if want := artifacts.ChecksumVersion(sha256Hex(gi), sha256Hex(gu)); live.Version != want {
		t.Fatalf("bare CSVs loaded as %q, want %q", live.Version, want)
	}

	g2 := genEmbeddings(12, 20, 10, 8, 0)
	gi2, gu2 := g2.csvs()
	bare := writeDir(t, t.TempDir(), gi2, gu2)
	bare.WithoutModel = false
	if _, err := l.Load(ctx, bare, false); err == nil || !strings.Contains(err.Error(), "WithoutModel") {
		t.Fatalf("no artifacts location and no WithoutModel: %v", err)
	}
	bare.Models = root
	_, err = l.Load(ctx, bare, false)
	want := artifacts.ChecksumVersion(sha256Hex(gi2), sha256Hex(gu2))
	if !errors.Is(err, embeddings.ErrNoModel) || !strings.Contains(err.Error(), want) {
		t.Fatalf("bare CSVs with the model check: %v, want ErrNoModel naming %s", err, want)
	}

	// Version v2's card records other embeddings than the ones offered as v2.
	for key, body := range map[string][]byte{artifacts.ItemEmbeddingsKey: gi2, artifacts.UserEmbeddingsKey: gu2} {
		if err := root.Put(ctx, artifacts.Key("v2", key), bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	putModel(t, root, "v2", map[string]string{artifacts.ItemEmbeddingsKey: sha256Hex(gi), artifacts.UserEmbeddingsKey: sha256Hex(gu2)})
	src, err := embeddings.ResolveArtifactsVersion(ctx, root, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Load(ctx, src, false); !errors.Is(err, embeddings.ErrNotOfModel) || !strings.Contains(err.Error(), "item_embeddings.csv") {
		t.Fatalf("embeddings not of the model: %v, want ErrNotOfModel naming the item file", err)
	}
	if vs := versions(t, pool); len(vs) != 1 || vs[0].Version != live.Version || vs[0].State != "live" {
		t.Fatalf("refused loads changed the versions: %+v", vs)
	}
	equalSets(t, readBack(t, pool), g1)

	// The right card: v2 loads.
	putModel(t, root, "v2", map[string]string{artifacts.ItemEmbeddingsKey: sha256Hex(gi2), artifacts.UserEmbeddingsKey: sha256Hex(gu2)})
	res, err := l.Load(ctx, src, false)
	if err != nil || res.Version != "v2" {
		t.Fatalf("v2 with its model: %+v, %v", res, err)
	}
	equalSets(t, readBack(t, pool), g2)
}

// Readers running KNN queries through the worker's query layer while three reloads and one
// rollback happen see only complete versions and zero errors.
func TestReadersDuringReloadsAndRollback(t *testing.T) {
	cfg, pool := testPG(t)
	l := newLoader(t, pool, cfg)
	ctx := context.Background()
	const n, d, k = 300, 16, 5
	load := func(marker float32) {
		t.Helper()
		g := genEmbeddings(uint64(marker), n, 20, d, marker)
		gi, gu := g.csvs()
		if _, err := l.Load(ctx, writeDir(t, t.TempDir(), gi, gu), false); err != nil {
			t.Fatal(err)
		}
	}
	load(1)
	idx, err := inference.NewVectorIndex(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	axis := make([]float32, d)
	axis[0] = 1

	var stop atomic.Bool
	var queries, failures atomic.Int64
	var mu sync.Mutex
	var errs []string
	seen := map[float64]bool{}
	fail := func(format string, args ...any) {
		failures.Add(1)
		mu.Lock()
		if len(errs) < 10 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Go(func() {
			for !stop.Load() {
				queries.Add(1)
				if r%2 == 0 {
					res, err := idx.ItemsFromUser(ctx, axis, k)
					if err != nil {
						fail("items from user: %v", err)
						continue
					}
					// Every item of version m scores exactly m along the first axis.
					if len(res) != k {
						fail("got %d items, want %d", len(res), k)
						continue
					}
					for _, it := range res {
						if it.Score != res[0].Score {
							fail("mixed versions in one answer: %+v", res)
							break
						}
					}
					mu.Lock()
					seen[res[0].Score] = true
					mu.Unlock()
				} else {
					var count, markers int
					err := pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT (embedding::real[])[1]) FROM item_emb").Scan(&count, &markers)
					if err != nil {
						fail("count: %v", err)
					} else if count != n || markers != 1 {
						fail("saw %d rows with %d versions, want %d rows of one version", count, markers, n)
					}
					if _, err := idx.ItemsFromItem(ctx, "S10_1000", k); err != nil {
						fail("items from item: %v", err)
					}
				}
			}
		})
	}
	waitQueries := func() {
		t.Helper()
		start := queries.Load()
		stacktest.Eventually(t, 30*time.Second, 5*time.Millisecond, func() bool { return queries.Load() >= start+20 }, "readers made no progress")
	}
	waitQueries()
	for _, m := range []float32{2, 3, 4} {
		load(m)
		waitQueries()
	}
	if _, err := l.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitQueries()
	stop.Store(true)
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d queries failed, first: %s", failures.Load(), queries.Load(), strings.Join(errs, "; "))
	}
	var final []float32
	res, err := idx.ItemsFromUser(ctx, axis, k)
	if err != nil {
		t.Fatal(err)
	}
	final = append(final, float32(res[0].Score))
	if final[0] != 3 {
		t.Fatalf("after the rollback the live version scores %v, want 3", final[0])
	}
	t.Logf("%d queries, versions seen: %v", queries.Load(), seen)
}
