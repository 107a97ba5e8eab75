package inference_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgvector/pgvector-go"
	"go.uber.org/zap"

	"github.com/recstream/recstream/batch/embeddings"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/pg"
	"github.com/recstream/recstream/internal/pgtest"
)

// vecData is a generated embeddings version: L2-normalised vectors, as the towers emit.
type vecData struct {
	itemIDs []string
	items   [][]float32
	userIDs []int
	users   [][]float32
}

func productCode(i int) string { return fmt.Sprintf("S%d_%07d", 10+i%90, i) }

func genVectors(seed uint64, n, m, d int) vecData {
	r := rand.New(rand.NewPCG(seed, 11))
	unit := func() []float32 {
		v := make([]float32, d)
		var norm float64
		for i := range v {
			x := r.NormFloat64()
			v[i] = float32(x)
			norm += x * x
		}
		for i := range v {
			v[i] = float32(float64(v[i]) / math.Sqrt(norm))
		}
		return v
	}
	return buildVecData(n, m, unit)
}

// buildVecData draws n items (product codes) and m users (customer numbers from 103).
func buildVecData(n, m int, draw func() []float32) vecData {
	var s vecData
	for i := range n {
		s.itemIDs, s.items = append(s.itemIDs, productCode(i)), append(s.items, draw())
	}
	for i := range m {
		s.userIDs, s.users = append(s.userIDs, 103+i), append(s.users, draw())
	}
	return s
}

func writeVec(b *bytes.Buffer, v []float32) {
	b.WriteString("\"[")
	for i, x := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatFloat(float64(x), 'g', -1, 32))
	}
	b.WriteString("]\"\n")
}

// writeCSVs writes dir/embeddings/{item,user}_embeddings.csv in the lab's format.
func writeCSVs(t testing.TB, dir string, s vecData) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "embeddings"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "embeddings", "item_embeddings.csv"))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.WriteString("id,embedding\n")
	for i, id := range s.itemIDs {
		b.WriteString(id)
		b.WriteByte(',')
		writeVec(&b, s.items[i])
		if b.Len() > 1<<20 {
			if _, err := f.Write(b.Bytes()); err != nil {
				t.Fatal(err)
			}
			b.Reset()
		}
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	b.WriteString("id,embedding\n")
	for i, id := range s.userIDs {
		b.WriteString(strconv.Itoa(id))
		b.WriteByte(',')
		writeVec(&b, s.users[i])
	}
	if err := os.WriteFile(filepath.Join(dir, "embeddings", "user_embeddings.csv"), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// testSchema creates and migrates a unique schema (dropped on cleanup) and returns its config.
func testSchema(t testing.TB, efSearch int) pg.Config {
	t.Helper()
	return pgtest.Schema(t, "t_vec_", efSearch)
}

// testSchemaConfig is the local stack's postgres config for schema name (not created here).
func testSchemaConfig(t testing.TB, name string, efSearch int) pg.Config {
	t.Helper()
	return pgtest.Config(t, name, efSearch)
}

func connect(t testing.TB, cfg pg.Config) *pgxpool.Pool {
	t.Helper()
	pool, err := pg.Connect(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// load loads generated vectors with the embeddings loader; they have no model, which these
// index tests do not need (WithoutModel).
func load(t testing.TB, pool *pgxpool.Pool, cfg pg.Config, s vecData, version string) embeddings.LoadResult {
	t.Helper()
	dir := t.TempDir()
	writeCSVs(t, dir, s)
	st, err := objstore.Open("file://"+dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := embeddings.NewLoader(pool, cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Load(context.Background(), embeddings.Source{Store: st, Version: version, WithoutModel: true}, false)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func dot(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

func cosDist(a, b []float32) float64 {
	return 1 - dot(a, b)/math.Sqrt(dot(a, a)*dot(b, b))
}

// bruteForce returns the indices of the k items with the highest score, best first.
func bruteForce(s vecData, k int, score func(i int) float64, skip int) []int {
	// Keep the k best in a small sorted slice: one pass, each score computed once.
	type cand struct {
		i int
		s float64
	}
	best := make([]cand, 0, k+1)
	for i := range s.items {
		if i == skip {
			continue
		}
		c := cand{i, score(i)}
		if len(best) == k && c.s <= best[k-1].s {
			continue
		}
		pos := sort.Search(len(best), func(j int) bool { return best[j].s < c.s })
		best = append(best, cand{})
		copy(best[pos+1:], best[pos:])
		best[pos] = c
		if len(best) > k {
			best = best[:k]
		}
	}
	out := make([]int, len(best))
	for j, c := range best {
		out[j] = c.i
	}
	return out
}

func newIndex(t testing.TB, pool *pgxpool.Pool, cfg pg.Config) *inference.VectorIndex {
	t.Helper()
	idx, err := inference.NewVectorIndex(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// At the real data's size (110 products, 98 rated customers, 32 dimensions) the answers equal
// a brute-force search over the loaded vectors, in order.
func TestVectorQueriesMatchBruteForce(t *testing.T) {
	cfg := testSchema(t, 100)
	pool := connect(t, cfg)
	idx := newIndex(t, pool, cfg)
	ctx := context.Background()
	const k = 5

	// Before the first load: no version, no items, and every product is unknown.
	if _, err := idx.LiveVersion(ctx); !errors.Is(err, inference.ErrNoLiveVersion) {
		t.Fatalf("live version before a load: %v, want ErrNoLiveVersion", err)
	}
	if r, err := idx.ItemsFromUser(ctx, []float32{1, 0}, k); err != nil || len(r) != 0 {
		t.Fatalf("items from user before a load: %v, %v; want none", r, err)
	}
	if _, err := idx.ItemsFromItem(ctx, "S10_1678", k); !errors.Is(err, inference.ErrItemNotFound) {
		t.Fatalf("items from item before a load: %v, want ErrItemNotFound", err)
	}

	s := genVectors(42, 110, 98, 32)
	load(t, pool, cfg, s, "v-test-1")
	if v, err := idx.LiveVersion(ctx); err != nil || v != "v-test-1" {
		t.Fatalf("live version = %q, %v", v, err)
	}

	batched, err := idx.ItemsFromUsers(ctx, s.users, k)
	if err != nil {
		t.Fatal(err)
	}
	if len(batched) != len(s.users) {
		t.Fatalf("batched answers: %d, want %d", len(batched), len(s.users))
	}
	for u, emb := range s.users {
		single, err := idx.ItemsFromUser(ctx, emb, k)
		if err != nil {
			t.Fatal(err)
		}
		want := bruteForce(s, k, func(i int) float64 { return dot(emb, s.items[i]) }, -1)
		for _, got := range [][]inference.ScoredItem{single, batched[u]} {
			if len(got) != k {
				t.Fatalf("user %d: %d items, want %d", s.userIDs[u], len(got), k)
			}
			for j, w := range want {
				if got[j].ID != s.itemIDs[w] || math.Abs(got[j].Score-dot(emb, s.items[w])) > 1e-5 {
					t.Fatalf("user %d rank %d: %+v, want %s score %.6f", s.userIDs[u], j, got[j], s.itemIDs[w], dot(emb, s.items[w]))
				}
				if j > 0 && got[j].Score > got[j-1].Score {
					t.Fatalf("user %d: not ordered by score: %+v", s.userIDs[u], got)
				}
			}
		}
	}

	codes := []string{s.itemIDs[0], s.itemIDs[57], "S99_9999", s.itemIDs[109]}
	many, err := idx.ItemsFromItems(ctx, codes, k)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := many["S99_9999"]; ok || len(many) != 3 {
		t.Fatalf("items from items: %d answers %v, want 3 and the unknown code absent", len(many), many)
	}
	for _, qi := range []int{0, 57, 109} {
		code := s.itemIDs[qi]
		single, err := idx.ItemsFromItem(ctx, code, k)
		if err != nil {
			t.Fatal(err)
		}
		want := bruteForce(s, k, func(i int) float64 { return -cosDist(s.items[qi], s.items[i]) }, qi)
		for _, got := range [][]inference.SimilarItem{single, many[code]} {
			if len(got) != k {
				t.Fatalf("item %s: %d similar items, want %d", code, len(got), k)
			}
			for j, w := range want {
				if got[j].ID == code {
					t.Fatalf("item %s is similar to itself: %+v", code, got)
				}
				if got[j].ID != s.itemIDs[w] || math.Abs(got[j].Distance-cosDist(s.items[qi], s.items[w])) > 1e-5 {
					t.Fatalf("item %s rank %d: %+v, want %s distance %.6f", code, j, got[j], s.itemIDs[w], cosDist(s.items[qi], s.items[w]))
				}
			}
		}
	}
	if _, err := idx.ItemsFromItem(ctx, "S99_9999", k); !errors.Is(err, inference.ErrItemNotFound) {
		t.Fatalf("unknown product: %v, want ErrItemNotFound", err)
	}
	if _, err := idx.ItemsFromUser(ctx, s.users[0], 101); err == nil {
		t.Fatal("k above hnsw_ef_search accepted")
	}
	if _, err := idx.ItemsFromUsers(ctx, [][]float32{s.users[0], s.users[1][:5]}, k); err == nil {
		t.Fatal("mixed dimensions accepted")
	}
}

// The batched statements use the HNSW indexes (one index scan per query vector), and
// hnsw.ef_search from config reaches the server.
func TestQueriesUseHNSWIndexAndEfSearch(t *testing.T) {
	const efSearch = 12
	cfg := testSchema(t, efSearch)
	pool := connect(t, cfg)
	idx := newIndex(t, pool, cfg)
	ctx := context.Background()
	s := genVectors(7, 5000, 500, 32)
	load(t, pool, cfg, s, "")

	qs := make([]pgvector.Vector, len(s.users))
	for i, u := range s.users {
		qs[i] = pgvector.NewVector(u)
	}
	plan := func(sql string, args ...any) string {
		t.Helper()
		rows, err := pool.Query(ctx, "EXPLAIN "+sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(lines, "\n")
	}
	p := plan(idx.ItemsFromUsersSQL(), qs, 5)
	t.Logf("items-from-users plan:\n%s", p)
	if !strings.Contains(p, "Index Scan using item_emb_v") || !strings.Contains(p, "_ip_hnsw") {
		t.Fatalf("batched items-from-users plan does not use the inner-product HNSW index:\n%s", p)
	}
	p = plan(idx.ItemsFromItemsSQL(), s.itemIDs[:50], 5)
	if !strings.Contains(p, "_cos_hnsw") {
		t.Fatalf("batched items-from-items plan does not use the cosine HNSW index:\n%s", p)
	}

	var shown string
	if err := pool.QueryRow(ctx, "SELECT current_setting('hnsw.ef_search')").Scan(&shown); err != nil || shown != strconv.Itoa(efSearch) {
		t.Fatalf("hnsw.ef_search = %q, %v; want %d", shown, err, efSearch)
	}
	// Effective, not just set: an HNSW scan returns at most ef_search rows.
	rows, err := pool.Query(ctx, "SELECT id FROM "+cfg.Schema+".item_emb ORDER BY embedding <#> $1 LIMIT 100", qs[0])
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != efSearch {
		t.Fatalf("an index scan with LIMIT 100 returned %d rows, want hnsw.ef_search = %d", len(ids), efSearch)
	}
}
