package inference_test

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/internal/pg"
)

// batchedRounds runs rounds ItemsFromUsers calls of the given users and returns the query
// vectors answered per second and the p99 latency of one round trip.
func batchedRounds(tb testing.TB, idx *inference.VectorIndex, users [][]float32, k, rounds int) (qps float64, p99 time.Duration) {
	tb.Helper()
	ctx := context.Background()
	lat := make([]time.Duration, 0, rounds)
	start := time.Now()
	for range rounds {
		t0 := time.Now()
		res, err := idx.ItemsFromUsers(ctx, users, k)
		if err != nil {
			tb.Fatal(err)
		}
		if len(res) != len(users) || len(res[0]) != k {
			tb.Fatalf("got %d answers of %d items, want %d of %d", len(res), len(res[0]), len(users), k)
		}
		lat = append(lat, time.Since(t0))
	}
	total := time.Since(start)
	return float64(rounds*len(users)) / total.Seconds(), percentile(lat, 0.99)
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkItemsFromUsers500 answers 500 users per round trip against the real catalogue's
// size (110 items, 32 dimensions). Run: go test ./inference -run XXX -bench ItemsFromUsers500
func BenchmarkItemsFromUsers500(b *testing.B) {
	cfg := testSchema(b, 100)
	pool := connect(b, cfg)
	s := genVectors(1, 110, 500, 32)
	load(b, pool, cfg, s, "")
	idx := newIndex(b, pool, cfg)
	b.ResetTimer()
	var lat []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := idx.ItemsFromUsers(context.Background(), s.users, 5); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.ReportMetric(float64(len(lat)*len(s.users))/b.Elapsed().Seconds(), "queries/s")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
}

// TestBench1M is the large benchmark: 1,000,000 generated item vectors × 32
// dimensions loaded through `batch embeddings`' loader, then KNN latency and recall against
// exact search. It takes minutes, so it runs only with RECSTREAM_BENCH_1M=1:
//
//	RECSTREAM_BENCH_1M=1 go test ./inference -run TestBench1M -v -timeout 60m
func TestBench1M(t *testing.T) {
	if os.Getenv("RECSTREAM_BENCH_1M") != "1" {
		t.Skip("benchmark, not part of make test/CI: set RECSTREAM_BENCH_1M=1 to run the 1,000,000-item load and query benchmark (minutes)")
	}
	const n, d, k = 1_000_000, 32, 5
	s := genVectors(2026, n, 500, d)
	data := "uniform random unit vectors"
	if os.Getenv("RECSTREAM_BENCH_DATA") == "clustered" {
		// Trained embeddings are clustered (product lines, scales); uniform random vectors
		// in 32 dimensions are the worst case for any ANN index.
		s = genClustered(2026, n, 500, d, 2000, 0.35)
		data = "clustered unit vectors (2,000 clusters, noise 0.35)"
	}
	t.Logf("data: %s", data)
	var cfg pg.Config
	if existing := os.Getenv("RECSTREAM_BENCH_1M_SCHEMA"); existing != "" {
		// Query phase only, against a schema an earlier run loaded with the same generated
		// vectors (kept when that run was interrupted); the caller drops it afterwards.
		cfg = testSchemaConfig(t, existing, 100)
	} else {
		cfg = testSchema(t, 100)
		cfg.MaintenanceWorkMem = "1GB"
		if v := os.Getenv("RECSTREAM_BENCH_MWM"); v != "" {
			cfg.MaintenanceWorkMem = v
		}
		pool := connect(t, cfg)
		t0 := time.Now()
		res := load(t, pool, cfg, s, "bench-1m")
		total := time.Since(t0)
		t.Logf("load: %d items × %d dims (+%d users), maintenance_work_mem %s: copy %s (%.0f rows/s incl. CSV parsing), index build (PK + 2 HNSW + ANALYZE) %s, swap %s, total (incl. writing the CSV) %s",
			res.ItemRows, res.Dimension, res.UserRows, cfg.MaintenanceWorkMem, res.Copy.Round(time.Millisecond),
			float64(res.ItemRows+res.UserRows)/res.Copy.Seconds(), res.Index.Round(time.Millisecond), res.Swap.Round(time.Millisecond), total.Round(time.Millisecond))
	}

	// Exact top-5 by inner product for 200 random unit queries.
	r := rand.New(rand.NewPCG(99, 1))
	queries := genVectors(r.Uint64(), 0, 200, d).users
	if os.Getenv("RECSTREAM_BENCH_DATA") == "clustered" {
		queries = s.users[:200]
	}
	exact := make([][]int, len(queries))
	for qi, q := range queries {
		exact[qi] = bruteForce(s, k, func(i int) float64 { return dot(q, s.items[i]) }, -1)
	}
	for _, ef := range []int{40, 100, 200} {
		c := cfg
		c.EfSearch = ef
		p := connect(t, c)
		idx := newIndex(t, p, c)
		ctx := context.Background()
		// Warm the pool and the index pages.
		for _, q := range queries[:20] {
			if _, err := idx.ItemsFromUser(ctx, q, k); err != nil {
				t.Fatal(err)
			}
		}
		var lat []time.Duration
		hits := 0
		for rep := range 5 {
			for qi, q := range queries {
				t1 := time.Now()
				got, err := idx.ItemsFromUser(ctx, q, k)
				if err != nil {
					t.Fatal(err)
				}
				lat = append(lat, time.Since(t1))
				if rep == 0 {
					for _, w := range exact[qi] {
						for _, g := range got {
							if g.ID == s.itemIDs[w] {
								hits++
								break
							}
						}
					}
				}
			}
		}
		qps, p99 := batchedRounds(t, idx, s.users, k, 5)
		t.Logf("ef_search %d: KNN top-%d p50 %s p99 %s, recall@%d %.4f; batched 500 users/round trip: %.0f queries/s, round-trip p99 %s",
			ef, k, percentile(lat, 0.5).Round(10*time.Microsecond), percentile(lat, 0.99).Round(10*time.Microsecond), k,
			float64(hits)/float64(len(queries)*k), qps, p99.Round(time.Millisecond))
		p.Close()
	}
}

// genClustered draws unit vectors around nClusters random unit centres: centre + noise·N(0, I/d),
// normalised. Users come from the same clusters as items.
func genClustered(seed uint64, n, m, d, nClusters int, noise float64) vecData {
	centres := genVectors(seed, nClusters, 0, d).items
	r := rand.New(rand.NewPCG(seed, 13))
	draw := func() []float32 {
		c := centres[r.IntN(len(centres))]
		v := make([]float32, d)
		var norm float64
		for i := range v {
			x := float64(c[i]) + noise*r.NormFloat64()/math.Sqrt(float64(d))
			v[i] = float32(x)
			norm += x * x
		}
		for i := range v {
			v[i] = float32(float64(v[i]) / math.Sqrt(norm))
		}
		return v
	}
	return buildVecData(n, m, draw)
}
