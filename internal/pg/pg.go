// Package pg opens the PostgreSQL (pgvector) connection pool shared by the embeddings loader,
// the inference queries and the worker.
package pg

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxvec "github.com/pgvector/pgvector-go/pgx"
)

// Config is the `postgres` config section.
type Config struct {
	// DSN without the password, e.g. postgres://recstream@host:5432/recstream?sslmode=verify-full.
	// TLS is chosen with sslmode here (RDS: require or verify-full).
	DSN string `yaml:"dsn"`
	// Password comes only from RECSTREAM_POSTGRES_PASSWORD (or PGPASSWORD / ~/.pgpass).
	Password string `yaml:"password" secret:"true"`
	// Schema holding item_emb, user_emb and embedding_versions.
	Schema   string `yaml:"schema"`
	MaxConns int32  `yaml:"max_conns"`
	MinConns int32  `yaml:"min_conns"`
	// EfSearch is hnsw.ef_search for KNN queries (recall vs latency).
	EfSearch int `yaml:"hnsw_ef_search"`
	// MaintenanceWorkMem is maintenance_work_mem for HNSW index builds, e.g. "1GB": the build
	// slows several times once the graph outgrows it (about 800 bytes a row at 32 dimensions, m 16).
	MaintenanceWorkMem string `yaml:"maintenance_work_mem"`
	// HNSWM is the HNSW index's m (links per node) for `batch embeddings`; 0 means pgvector's
	// default, 16.
	HNSWM int `yaml:"hnsw_m"`
	// HNSWEfConstruction is the HNSW index's ef_construction; 0 means pgvector's default, 64.
	// It must be at least 2*m.
	HNSWEfConstruction int `yaml:"hnsw_ef_construction"`
}

// DefaultConfig is the postgres section of the shipped config.yaml: the local stack.
func DefaultConfig() Config {
	return Config{DSN: "postgres://recstream@127.0.0.1:5432/recstream?sslmode=disable", Schema: "public", MaxConns: 8, MinConns: 1,
		EfSearch: 100, MaintenanceWorkMem: "1GB"}
}

// IndexParams returns the HNSW m and ef_construction to build with, defaults filled in.
func (c Config) IndexParams() (m, efConstruction int) {
	m, efConstruction = c.HNSWM, c.HNSWEfConstruction
	if m == 0 {
		m = 16
	}
	if efConstruction == 0 {
		efConstruction = 64
	}
	return m, efConstruction
}

var identRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
var memRe = regexp.MustCompile(`^[0-9]+(kB|MB|GB)$`)

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.DSN == "" {
		return errors.New("dsn: must not be empty")
	}
	if _, err := pgx.ParseConfig(c.DSN); err != nil {
		return fmt.Errorf("dsn: cannot parse (value not shown: it may hold credentials)")
	}
	if !identRe.MatchString(c.Schema) {
		return fmt.Errorf("schema: must be a lower-case SQL identifier, got %q", c.Schema)
	}
	if c.MaxConns < 1 {
		return fmt.Errorf("max_conns: must be >= 1, got %d", c.MaxConns)
	}
	if c.MinConns < 0 || c.MinConns > c.MaxConns {
		return fmt.Errorf("min_conns: must be between 0 and max_conns (%d), got %d", c.MaxConns, c.MinConns)
	}
	if c.EfSearch < 1 || c.EfSearch > 1000 {
		return fmt.Errorf("hnsw_ef_search: must be between 1 and 1000, got %d", c.EfSearch)
	}
	if !memRe.MatchString(c.MaintenanceWorkMem) {
		return fmt.Errorf("maintenance_work_mem: must look like 64MB or 1GB, got %q", c.MaintenanceWorkMem)
	}
	if c.HNSWM != 0 && (c.HNSWM < 2 || c.HNSWM > 100) {
		return fmt.Errorf("hnsw_m: must be 0 (default 16) or between 2 and 100, got %d", c.HNSWM)
	}
	if m, efc := c.IndexParams(); c.HNSWEfConstruction != 0 && (efc < 2*m || efc > 1000) {
		return fmt.Errorf("hnsw_ef_construction: must be 0 (default 64) or between 2*hnsw_m (%d) and 1000, got %d", 2*m, c.HNSWEfConstruction)
	}
	return nil
}

// Connect opens a pool: pgvector types registered on every connection, search_path set to the
// configured schema, hnsw.ef_search applied. It pings once so a bad DSN fails at start-up.
func Connect(ctx context.Context, c Config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(c.DSN)
	if err != nil {
		return nil, errors.New("parse postgres dsn: invalid (value not shown)")
	}
	if c.Password != "" {
		pc.ConnConfig.Password = c.Password
	}
	pc.MaxConns = c.MaxConns
	pc.MinConns = c.MinConns
	if pc.ConnConfig.RuntimeParams == nil {
		pc.ConnConfig.RuntimeParams = map[string]string{}
	}
	pc.ConnConfig.RuntimeParams["search_path"] = c.Schema + ",public"
	pc.ConnConfig.RuntimeParams["hnsw.ef_search"] = fmt.Sprint(c.EfSearch)
	pc.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		// Registering needs the vector type to exist; a fresh database gets it from the
		// migrations, which run on a pool of their own (ConnectRaw).
		return pgxvec.RegisterTypes(ctx, conn)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect postgres %s: %w", pc.ConnConfig.Host, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping postgres %s:%d: %w", pc.ConnConfig.Host, pc.ConnConfig.Port, err)
	}
	return pool, nil
}

// ConnectRaw opens a single connection without pgvector type registration (for migrations,
// which may be the ones creating the extension).
func ConnectRaw(ctx context.Context, c Config) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(c.DSN)
	if err != nil {
		return nil, errors.New("parse postgres dsn: invalid (value not shown)")
	}
	if c.Password != "" {
		cc.Password = c.Password
	}
	cc.RuntimeParams["search_path"] = c.Schema + ",public"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect postgres %s:%d: %w", cc.Host, cc.Port, err)
	}
	return conn, nil
}
