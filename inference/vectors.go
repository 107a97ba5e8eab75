package inference

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgvector/pgvector-go"

	"github.com/recstream/recstream/internal/pg"
)

// ScoredItem is an item recommended for a user. Score is the model's score, the inner product
// of the user and item embeddings (pgvector's <#> negated): higher is better.
type ScoredItem struct {
	ID    string
	Score float64
}

// SimilarItem is an item near another item. Distance is the cosine distance (pgvector <=>),
// in [0, 2]: lower is more similar.
type SimilarItem struct {
	ID       string
	Distance float64
}

// ErrItemNotFound means the product code has no embedding in the live version. Test with
// errors.Is.
var ErrItemNotFound = errors.New("item has no embedding")

// ErrNoLiveVersion means no embeddings version has been loaded yet (see `batch embeddings`).
var ErrNoLiveVersion = errors.New("no live embeddings version")

// VectorIndex answers nearest-neighbour queries over the live item_emb table (HNSW indexes
// built by `batch embeddings`). It is safe for concurrent use. Queries keep working, without
// errors, while the loader swaps a new version in: each query sees the old or the new version
// completely. Before the first load the tables are empty and queries return no items.
type VectorIndex struct {
	pool     *pgxpool.Pool
	efSearch int
	items    string // quoted <schema>.item_emb
	versions string // quoted <schema>.embedding_versions
}

// NewVectorIndex returns an index over cfg.Schema's tables using pool, which must come from
// pg.Connect (pgvector types registered; hnsw.ef_search = cfg.EfSearch on every connection).
// It does no I/O.
func NewVectorIndex(pool *pgxpool.Pool, cfg pg.Config) (*VectorIndex, error) {
	if pool == nil {
		return nil, errors.New("vector index: nil pool")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("vector index: postgres config: %w", err)
	}
	return &VectorIndex{
		pool:     pool,
		efSearch: cfg.EfSearch,
		items:    pgx.Identifier{cfg.Schema, "item_emb"}.Sanitize(),
		versions: pgx.Identifier{cfg.Schema, "embedding_versions"}.Sanitize(),
	}, nil
}

// checkK rejects k the HNSW scan cannot answer: it returns at most hnsw.ef_search rows, and
// items-from-item drops the item itself.
func (v *VectorIndex) checkK(k, extra int) error {
	if k < 1 || k+extra > v.efSearch {
		return fmt.Errorf("k must be between 1 and hnsw_ef_search-%d (%d), got %d", extra, v.efSearch-extra, k)
	}
	return nil
}

// ItemsFromUser returns the k items with the highest inner product with the user embedding
// emb, best first.
func (v *VectorIndex) ItemsFromUser(ctx context.Context, emb []float32, k int) ([]ScoredItem, error) {
	res, err := v.ItemsFromUsers(ctx, [][]float32{emb}, k)
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// ErrInvalidInput marks a query that fails because of its input (a non-finite embedding, a
// value PostgreSQL refuses as data): the same input fails again, unlike an outage.
var ErrInvalidInput = errors.New("invalid query input")

// IsInputError reports whether err is caused by the query's input rather than by the database
// or the network: ErrInvalidInput, or a PostgreSQL data exception (SQLSTATE class 22, e.g.
// "NaN not allowed in vector", a NUL byte in text) or program limit (class 54).
func IsInputError(err error) bool {
	if errors.Is(err, ErrInvalidInput) {
		return true
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "54"))
}

// ItemsFromUsers answers ItemsFromUser for every embedding in embs in ONE round trip (a
// CROSS JOIN LATERAL over the unnested query vectors; each lateral subquery is an HNSW index
// scan). out[i] belongs to embs[i]. All embeddings must have the live dimension.
func (v *VectorIndex) ItemsFromUsers(ctx context.Context, embs [][]float32, k int) ([][]ScoredItem, error) {
	if err := v.checkK(k, 0); err != nil {
		return nil, fmt.Errorf("items from users: %w", err)
	}
	if len(embs) == 0 {
		return nil, nil
	}
	qs := make([]pgvector.Vector, len(embs))
	for i, e := range embs {
		if len(e) == 0 || len(e) != len(embs[0]) {
			return nil, fmt.Errorf("items from users: embedding %d has %d values, want %d (>0, all equal)", i, len(e), len(embs[0]))
		}
		for _, x := range e {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				// pgvector refuses it for this input alone: say so before the round trip.
				return nil, fmt.Errorf("items from users: %w: embedding %d is not finite", ErrInvalidInput, i)
			}
		}
		qs[i] = pgvector.NewVector(e)
	}
	rows, err := v.pool.Query(ctx, v.itemsFromUsersSQL(), qs, k)
	if err != nil {
		return nil, fmt.Errorf("items from %d users: %w", len(embs), err)
	}
	out := make([][]ScoredItem, len(embs))
	var ord int64
	var it ScoredItem
	_, err = pgx.ForEachRow(rows, []any{&ord, &it.ID, &it.Score}, func() error {
		if ord < 1 || int(ord) > len(out) {
			return fmt.Errorf("row for query %d of %d", ord, len(out))
		}
		out[ord-1] = append(out[ord-1], it)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("items from %d users: %w", len(embs), err)
	}
	for _, r := range out {
		// The plan yields each query's rows in index order; sorting makes the contract
		// independent of the plan.
		sort.SliceStable(r, func(a, b int) bool { return r[a].Score > r[b].Score })
	}
	return out, nil
}

// ItemsFromItem returns the k items nearest to productCode by cosine distance, nearest first,
// excluding productCode itself. An unknown productCode gives ErrItemNotFound.
func (v *VectorIndex) ItemsFromItem(ctx context.Context, productCode string, k int) ([]SimilarItem, error) {
	res, err := v.ItemsFromItems(ctx, []string{productCode}, k)
	if err != nil {
		return nil, err
	}
	r, ok := res[productCode]
	if !ok {
		return nil, fmt.Errorf("items from item %q: %w", productCode, ErrItemNotFound)
	}
	return r, nil
}

// ItemsFromItems answers ItemsFromItem for every code in codes in one round trip. Unknown
// codes are absent from the map; a known code with no neighbours (a one-item table) maps to
// an empty slice.
func (v *VectorIndex) ItemsFromItems(ctx context.Context, codes []string, k int) (map[string][]SimilarItem, error) {
	if err := v.checkK(k, 1); err != nil {
		return nil, fmt.Errorf("items from items: %w", err)
	}
	out := make(map[string][]SimilarItem, len(codes))
	if len(codes) == 0 {
		return out, nil
	}
	// LEFT JOIN LATERAL keeps a known item even when it has no neighbour, so that absence
	// from the result means "unknown" without a second query.
	rows, err := v.pool.Query(ctx, v.itemsFromItemsSQL(), codes, k)
	if err != nil {
		return nil, fmt.Errorf("items from %d items: %w", len(codes), err)
	}
	var q string
	var id *string
	var dist *float64
	_, err = pgx.ForEachRow(rows, []any{&q, &id, &dist}, func() error {
		r := out[q]
		if r == nil {
			r = []SimilarItem{}
		}
		if id != nil && dist != nil {
			r = append(r, SimilarItem{ID: *id, Distance: *dist})
		}
		out[q] = r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("items from %d items: %w", len(codes), err)
	}
	for _, r := range out {
		sort.SliceStable(r, func(a, b int) bool { return r[a].Distance < r[b].Distance })
	}
	return out, nil
}

// itemsFromUsersSQL takes $1 vector[] (the query embeddings) and $2 k. Each lateral subquery
// orders by the inner-product operator against an outer parameter, which the planner answers
// with a scan of the vector_ip_ops HNSW index per query vector.
//
// The result columns (bigint, varchar, float8) never depend on the embeddings' dimension, so
// the statement pgx prepared and cached stays valid across the loader's swaps: PostgreSQL
// re-plans it against the renamed tables instead of failing with "cached plan must not change
// result type" (which a statement returning the vector column would get after a dimension
// change).
func (v *VectorIndex) itemsFromUsersSQL() string {
	return `SELECT q.ord, r.id, r.score
		FROM unnest($1::vector[]) WITH ORDINALITY AS q(emb, ord)
		CROSS JOIN LATERAL (
			SELECT i.id, -(i.embedding <#> q.emb) AS score
			FROM ` + v.items + ` i
			ORDER BY i.embedding <#> q.emb
			LIMIT $2) r`
}

// itemsFromItemsSQL takes $1 text[] (product codes) and $2 k; one vector_cosine_ops HNSW
// scan per known code.
func (v *VectorIndex) itemsFromItemsSQL() string {
	return `SELECT q.id, r.id, r.distance
		FROM ` + v.items + ` q
		LEFT JOIN LATERAL (
			SELECT i.id, i.embedding <=> q.embedding AS distance
			FROM ` + v.items + ` i
			WHERE i.id <> q.id
			ORDER BY i.embedding <=> q.embedding
			LIMIT $2) r ON true
		WHERE q.id = ANY($1)`
}

// LiveVersion returns the name of the embeddings version the queries currently read, from
// embedding_versions; ErrNoLiveVersion before the first load.
func (v *VectorIndex) LiveVersion(ctx context.Context) (string, error) {
	var name string
	err := v.pool.QueryRow(ctx, "SELECT version FROM "+v.versions+" WHERE state = 'live'").Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNoLiveVersion
	}
	if err != nil {
		return "", fmt.Errorf("read live embeddings version: %w", err)
	}
	return name, nil
}
