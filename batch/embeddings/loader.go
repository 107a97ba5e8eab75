// Package embeddings is `recstream batch embeddings`: it loads one artifacts version's item and
// user embeddings (two CSVs, validated as they stream) into PostgreSQL + pgvector, builds the
// HNSW indexes off to the side and swaps the new tables in atomically, keeping the previous
// version for Rollback.
package embeddings

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/pg"
)

// Object keys of the embeddings inside one artifacts version (the lab's layout, defined in
// internal/artifacts).
const (
	ItemEmbeddingsKey = artifacts.ItemEmbeddingsKey
	UserEmbeddingsKey = artifacts.UserEmbeddingsKey
)

// ErrLoadInProgress means another `batch embeddings` (load or rollback) holds the loader's
// advisory lock on the same schema.
var ErrLoadInProgress = errors.New("another embeddings load or rollback is running on this schema")

// ErrNoPreviousVersion means --rollback found no previous version to swap back in.
var ErrNoPreviousVersion = errors.New("no previous embeddings version to roll back to")

// ErrNoModel means Load refused a version that has no model in the artifacts location (see
// Source.Models): a worker serving it could not answer. It wraps
// artifacts.ErrNoModel when the model is missing or unusable.
var ErrNoModel = errors.New("version has no model")

// ErrNotOfModel means the embeddings files are not the ones the version's model card
// records: loading them would pair that model with another model's embeddings.
var ErrNotOfModel = errors.New("the embeddings are not the ones the version's model was published with")

// loaderLockKey is the first key of the loader's two-key advisory lock ("embd"); the second is
// hashtext(schema).
const loaderLockKey = 0x656d6264

// Source is where one embeddings version is read from: Store holds
// <Prefix>/embeddings/item_embeddings.csv and <Prefix>/embeddings/user_embeddings.csv.
type Source struct {
	Store  objstore.Store
	Prefix string // "" or a key prefix without trailing slash, e.g. versions/v20260101
	// Version is the artifacts version recorded in embedding_versions; "" derives a name from
	// the two files' checksums (artifacts.ChecksumVersion: sha-<12 hex>), which never has a
	// model.
	Version string
	// Models is the artifacts location that must hold the version's model
	// (versions/<Version>/model/… and scalers/, see artifacts.CheckModel): a worker serving
	// embeddings without their model cannot answer. Load checks it before it reads anything
	// when Version is given (after deriving the name otherwise), and checks that the files
	// loaded are the embeddings the model card records, before anything live changes.
	Models objstore.Store
	// WithoutModel loads the embeddings with no model check (Models may be nil): only for
	// embeddings no worker serves, such as pgvector tests and benchmarks.
	WithoutModel bool
}

// ResolveArtifactsVersion returns the source for one version of the artifacts store root:
// version "latest" follows <root>/latest.json, any other name means <root>/versions/<name>.
// The model is checked in the same root. It reads only the pointer object.
func ResolveArtifactsVersion(ctx context.Context, root objstore.Store, version string) (Source, error) {
	v, err := artifacts.Resolve(ctx, root, version)
	if err != nil {
		return Source{}, fmt.Errorf("resolve artifacts version %s: %w", version, err)
	}
	return Source{Store: root, Prefix: artifacts.VersionPrefix(v), Version: v, Models: root}, nil
}

// checkModel checks that version has a model in src.Models and returns the checksums its card
// records.
func checkModel(ctx context.Context, src Source, version string) (map[string]string, error) {
	sums, err := artifacts.CheckModel(ctx, src.Models, version)
	if errors.Is(err, artifacts.ErrNoModel) {
		return nil, fmt.Errorf("%w, a worker serving it could not answer: %w", ErrNoModel, err)
	}
	return sums, err
}

// LoadResult describes what Load or Rollback did.
type LoadResult struct {
	Version   string // the version now live
	NoOp      bool   // the files equal the live version's (same checksums and name): nothing changed
	Dimension int
	ItemRows  int
	UserRows  int
	ItemSHA   string
	UserSHA   string
	Copy      time.Duration // reading, validating and COPYing both files
	Index     time.Duration // primary keys, HNSW indexes and ANALYZE
	Swap      time.Duration // the renaming transaction (readers wait at most this long)
}

// Loader loads embeddings versions into PostgreSQL + pgvector and swaps them in
// atomically. Methods are safe to call from several goroutines and processes: each takes a
// per-schema advisory lock and fails with ErrLoadInProgress when it is held elsewhere.
type Loader struct {
	pool *pgxpool.Pool
	cfg  pg.Config
	log  *zap.Logger
	// swapLockTimeout bounds how long the swap waits for readers' locks per attempt; the swap
	// is retried up to swapAttempts times. Tests may lower it.
	swapLockTimeout time.Duration
	// progressEvery is the interval of Load's progress lines (tests shorten it).
	progressEvery time.Duration
}

const swapAttempts = 5

// NewLoader returns a loader using pool (opened with pg.Connect on a migrated schema,
// see schema.MigratePostgres) and cfg's schema, HNSW and maintenance_work_mem settings. It does
// no I/O.
func NewLoader(pool *pgxpool.Pool, cfg pg.Config, log *zap.Logger) (*Loader, error) {
	if pool == nil {
		return nil, errors.New("embeddings loader: nil pool")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("embeddings loader: postgres config: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Loader{pool: pool, cfg: cfg, log: log.With(zap.String("component", "embeddings")), swapLockTimeout: 5 * time.Second, progressEvery: progressInterval}, nil
}

func (l *Loader) ident(name string) string {
	return pgx.Identifier{l.cfg.Schema, name}.Sanitize()
}

// lockedConn acquires a connection holding the loader's advisory lock.
func (l *Loader) lockedConn(ctx context.Context) (*pgxpool.Conn, func(), error) {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("acquire connection: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, hashtext($2))", loaderLockKey, l.cfg.Schema).Scan(&ok); err != nil {
		conn.Release()
		return nil, nil, fmt.Errorf("take loader lock: %w", err)
	}
	if !ok {
		conn.Release()
		return nil, nil, ErrLoadInProgress
	}
	release := func() {
		ctx := context.WithoutCancel(ctx)
		_, err1 := conn.Exec(ctx, "SELECT pg_advisory_unlock($1, hashtext($2))", loaderLockKey, l.cfg.Schema)
		_, err2 := conn.Exec(ctx, "RESET maintenance_work_mem")
		if err1 != nil || err2 != nil {
			// The session may hold the lock or the setting: do not hand it to anyone else.
			_ = conn.Conn().Close(ctx)
		}
		conn.Release()
	}
	return conn, release, nil
}

type liveVersion struct {
	id               int64
	version          string
	itemSHA, userSHA string
	dim              int
}

// Load reads src's two CSVs, validates and COPYs them into staging tables, builds the primary
// keys and HNSW indexes, ANALYZEs, and swaps the staging tables in as item_emb / user_emb in
// one short transaction; the replaced version becomes item_emb_previous / user_emb_previous
// (for Rollback) and the one before it is dropped. Any invalid row aborts before the swap with
// an *InputError naming file, line and reason, and nothing live changes. When the
// files' checksums and version name equal the live version's, Load returns NoOp unless force.
func (l *Loader) Load(ctx context.Context, src Source, force bool) (LoadResult, error) {
	if src.Store == nil {
		return LoadResult{}, errors.New("load embeddings: source has no store")
	}
	if src.Version != "" {
		if err := artifacts.ValidateVersion(src.Version); err != nil {
			return LoadResult{}, fmt.Errorf("load embeddings: %w", err)
		}
	}
	if !src.WithoutModel && src.Models == nil {
		return LoadResult{}, errors.New("load embeddings: no artifacts location to check the version's model in (set Models, or WithoutModel for embeddings no worker serves)")
	}
	// A version named up front is checked before any work; a derived name once it is known.
	var recorded map[string]string
	if !src.WithoutModel && src.Version != "" {
		var err error
		if recorded, err = checkModel(ctx, src, src.Version); err != nil {
			return LoadResult{}, fmt.Errorf("load embeddings: %w", err)
		}
	}
	conn, release, err := l.lockedConn(ctx)
	if err != nil {
		return LoadResult{}, fmt.Errorf("load embeddings: %w", err)
	}
	defer release()
	c := conn.Conn()

	itemStaging, userStaging := l.ident("item_emb_staging"), l.ident("user_emb_staging")
	dropStaging := func() {
		_, _ = c.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS "+itemStaging+", "+userStaging)
	}
	// Leftovers of a crashed run are ours to remove: we hold the lock.
	if _, err := c.Exec(ctx, "DROP TABLE IF EXISTS "+itemStaging+", "+userStaging); err != nil {
		return LoadResult{}, fmt.Errorf("load embeddings: drop old staging tables: %w", err)
	}
	if _, err := c.Exec(ctx, "SELECT set_config('maintenance_work_mem', $1, false)", l.cfg.MaintenanceWorkMem); err != nil {
		return LoadResult{}, fmt.Errorf("load embeddings: set maintenance_work_mem: %w", err)
	}
	var id int64
	if err := c.QueryRow(ctx, "SELECT nextval(pg_get_serial_sequence($1, 'id'))", l.cfg.Schema+".embedding_versions").Scan(&id); err != nil {
		return LoadResult{}, fmt.Errorf("load embeddings: allocate version id (is the schema migrated?): %w", err)
	}

	pr := newLoadProgress(l.log, time.Now, l.pool)
	tickCtx, stopTicks := context.WithCancel(ctx)
	ticker := time.NewTicker(l.progressEvery)
	defer ticker.Stop()
	var ticks sync.WaitGroup
	ticks.Add(1)
	go func() { defer ticks.Done(); pr.run(tickCtx, ticker.C) }()
	defer func() { stopTicks(); ticks.Wait() }()

	res := LoadResult{}
	start := time.Now()
	itemKey, userKey := objstore.Join(src.Prefix, ItemEmbeddingsKey), objstore.Join(src.Prefix, UserEmbeddingsKey)
	itemRes, err := l.copyFile(ctx, c, src.Store, itemKey, Items, 0, "item_emb_staging", "varchar", pr)
	if err != nil {
		dropStaging()
		return LoadResult{}, fmt.Errorf("load embeddings: %w", err)
	}
	userRes, err := l.copyFile(ctx, c, src.Store, userKey, Users, itemRes.dim, "user_emb_staging", "integer", pr)
	if err != nil {
		dropStaging()
		return LoadResult{}, fmt.Errorf("load embeddings: %w", err)
	}
	res.Copy = time.Since(start)
	res.Dimension, res.ItemRows, res.UserRows = itemRes.dim, itemRes.rows, userRes.rows
	res.ItemSHA, res.UserSHA = itemRes.sha, userRes.sha
	res.Version = src.Version
	if res.Version == "" {
		res.Version = artifacts.ChecksumVersion(res.ItemSHA, res.UserSHA)
		if !src.WithoutModel {
			if recorded, err = checkModel(ctx, src, res.Version); err != nil {
				dropStaging()
				return LoadResult{}, fmt.Errorf("load embeddings: %w", err)
			}
		}
	}
	if !src.WithoutModel {
		// A card that records checksums (every card the trainer writes) names the very
		// embeddings its model produced: anything else would be served with the wrong model.
		for key, got := range map[string]string{ItemEmbeddingsKey: res.ItemSHA, UserEmbeddingsKey: res.UserSHA} {
			if want, ok := recorded[key]; ok && want != got {
				dropStaging()
				return LoadResult{}, fmt.Errorf("load embeddings %s: %s has sha256 %s, the model card records %s: %w",
					res.Version, src.Store.URL(objstore.Join(src.Prefix, key)), got, want, ErrNotOfModel)
			}
		}
	}

	live, err := l.live(ctx, c)
	if err != nil {
		dropStaging()
		return LoadResult{}, fmt.Errorf("load embeddings: %w", err)
	}
	if !force && live != nil && live.itemSHA == res.ItemSHA && live.userSHA == res.UserSHA && live.version == res.Version {
		dropStaging()
		res.NoOp = true
		l.log.Info("embeddings unchanged", zap.String("version", res.Version))
		return res, nil
	}

	start = time.Now()
	tag := fmt.Sprintf("v%d", id)
	m, efc := l.cfg.IndexParams()
	itemRows, userRows := int64(res.ItemRows), int64(res.UserRows)
	for _, b := range []struct {
		what, table string
		rows        int64
		stmt        string
	}{
		{"primary key", "item_emb_staging", itemRows, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s PRIMARY KEY (id)", itemStaging, pgx.Identifier{"item_emb_" + tag + "_pkey"}.Sanitize())},
		{"primary key", "user_emb_staging", userRows, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s PRIMARY KEY (id)", userStaging, pgx.Identifier{"user_emb_" + tag + "_pkey"}.Sanitize())},
		// items-from-user ranks by inner product (ORDER BY embedding <#> q).
		{"hnsw vector_ip_ops", "item_emb_staging", itemRows, fmt.Sprintf("CREATE INDEX %s ON %s USING hnsw (embedding vector_ip_ops) WITH (m = %d, ef_construction = %d)",
			pgx.Identifier{"item_emb_" + tag + "_ip_hnsw"}.Sanitize(), itemStaging, m, efc)},
		// items-from-item ranks by cosine distance (ORDER BY embedding <=> q).
		{"hnsw vector_cosine_ops", "item_emb_staging", itemRows, fmt.Sprintf("CREATE INDEX %s ON %s USING hnsw (embedding vector_cosine_ops) WITH (m = %d, ef_construction = %d)",
			pgx.Identifier{"item_emb_" + tag + "_cos_hnsw"}.Sanitize(), itemStaging, m, efc)},
		{"analyze", "item_emb_staging", itemRows, "ANALYZE " + itemStaging},
		{"analyze", "user_emb_staging", userRows, "ANALYZE " + userStaging},
	} {
		fields := []zap.Field{zap.String("stage", "index"), zap.String("building", b.what), zap.String("table", b.table), zap.Int64("rows", b.rows)}
		if strings.HasPrefix(b.what, "hnsw") {
			need := b.rows * hnswBytesPerRow(res.Dimension, m)
			fields = append(fields, zap.Int("m", m), zap.Int("ef_construction", efc), zap.String("maintenance_work_mem", l.cfg.MaintenanceWorkMem),
				zap.Int64("graph_estimate_mb", need>>20))
			if have, ok := memBytes(l.cfg.MaintenanceWorkMem); ok && need > have {
				l.log.Warn("the HNSW graph will not fit in maintenance_work_mem: past the rows that fit, pgvector inserts one row at a time into the on-disk index and the build takes several times longer; raise postgres.maintenance_work_mem",
					zap.String("table", b.table), zap.Int64("rows", b.rows), zap.Int64("graph_estimate_mb", need>>20),
					zap.String("maintenance_work_mem", l.cfg.MaintenanceWorkMem), zap.Int64("rows_that_fit", have/hnswBytesPerRow(res.Dimension, m)))
			}
		}
		l.log.Info("embeddings index build started", fields...)
		pr.building(b.what, b.table, b.rows, c.PgConn().PID())
		t0 := time.Now()
		if _, err := c.Exec(ctx, b.stmt); err != nil {
			dropStaging()
			return LoadResult{}, fmt.Errorf("load embeddings: build %s: %w", strings.Fields(b.stmt)[0]+" "+strings.Fields(b.stmt)[1], err)
		}
		l.log.Info("embeddings index built", zap.String("stage", "index"), zap.String("building", b.what), zap.String("table", b.table),
			zap.Duration("duration", time.Since(t0)))
	}
	res.Index = time.Since(start)

	start = time.Now()
	err = l.swap(ctx, c, func(tx pgx.Tx) error {
		return l.swapIn(ctx, tx, live, id, res, src.Store.URL(itemKey), src.Store.URL(userKey))
	})
	if err != nil {
		dropStaging()
		return LoadResult{}, fmt.Errorf("load embeddings %s: swap: %w", res.Version, err)
	}
	res.Swap = time.Since(start)
	l.log.Info("embeddings loaded", zap.String("version", res.Version), zap.Int("dimension", res.Dimension),
		zap.Int("records", res.ItemRows+res.UserRows), zap.Duration("copy", res.Copy), zap.Duration("index", res.Index),
		zap.Duration("swap", res.Swap))
	return res, nil
}

// swap runs fn in a transaction whose lock waits are bounded, retrying when a long reader
// holds a lock: a waiting ACCESS EXCLUSIVE request queues every new reader behind it, so the
// swap gives up quickly and tries again rather than stall the worker.
func (l *Loader) swap(ctx context.Context, c *pgx.Conn, fn func(pgx.Tx) error) error {
	var err error
	for attempt := 1; attempt <= swapAttempts; attempt++ {
		err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", fmt.Sprintf("%dms", l.swapLockTimeout.Milliseconds())); err != nil {
				return err
			}
			return fn(tx)
		})
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "55P03" { // lock_not_available
			return err
		}
		l.log.Warn("swap waited too long for readers' locks", zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
	return err
}

func (l *Loader) swapIn(ctx context.Context, tx pgx.Tx, live *liveVersion, id int64, res LoadResult, itemURL, userURL string) error {
	item, user := l.ident("item_emb"), l.ident("user_emb")
	itemPrev, userPrev := l.ident("item_emb_previous"), l.ident("user_emb_previous")
	stmts := []string{
		// Lock both live tables first, in a fixed order, so readers wait rather than see one
		// table swapped and the other not.
		"LOCK TABLE " + item + ", " + user + " IN ACCESS EXCLUSIVE MODE",
		"DROP TABLE IF EXISTS " + itemPrev + ", " + userPrev,
	}
	if live != nil {
		stmts = append(stmts,
			"ALTER TABLE "+item+" RENAME TO item_emb_previous",
			"ALTER TABLE "+user+" RENAME TO user_emb_previous",
			"UPDATE "+l.ident("embedding_versions")+" SET state = 'retired' WHERE state = 'previous'",
			"UPDATE "+l.ident("embedding_versions")+" SET state = 'previous' WHERE state = 'live'")
	} else {
		// The migration's placeholders (no dimension, no rows) are not worth keeping.
		stmts = append(stmts, "DROP TABLE "+item+", "+user)
	}
	stmts = append(stmts,
		"ALTER TABLE "+l.ident("item_emb_staging")+" RENAME TO item_emb",
		"ALTER TABLE "+l.ident("user_emb_staging")+" RENAME TO user_emb")
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return err
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+l.ident("embedding_versions")+`
		(id, version, item_source, item_sha256, item_rows, user_source, user_sha256, user_rows, dimension, state)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'live')`,
		id, res.Version, itemURL, res.ItemSHA, res.ItemRows, userURL, res.UserSHA, res.UserRows, res.Dimension)
	return err
}

func (l *Loader) live(ctx context.Context, c *pgx.Conn) (*liveVersion, error) {
	var v liveVersion
	err := c.QueryRow(ctx, "SELECT id, version, item_sha256, user_sha256, dimension FROM "+l.ident("embedding_versions")+" WHERE state = 'live'").
		Scan(&v.id, &v.version, &v.itemSHA, &v.userSHA, &v.dim)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read live version: %w", err)
	}
	return &v, nil
}

type copied struct {
	dim, rows int
	sha       string
}

// copyFile streams one CSV from store into a new staging table (no indexes yet, so COPY runs
// at full speed), hashing the raw bytes on the way.
func (l *Loader) copyFile(ctx context.Context, c *pgx.Conn, store objstore.Store, key string, kind Kind, wantDim int, table, idType string, pr *loadProgress) (copied, error) {
	url := store.URL(key)
	size := objectSize(ctx, store, key)
	body, err := store.Get(ctx, key)
	if err != nil {
		return copied{}, fmt.Errorf("open %s: %w", url, err)
	}
	defer body.Close()
	start := time.Now()
	pr.copying(url, size)
	l.log.Info("embeddings copy started", zap.String("stage", "copy"), zap.String("file", url), zap.Int64("bytes_total", size), zap.String("table", table))
	h := sha256.New()
	er, err := newEmbeddingsReader(io.TeeReader(countingReader{body, &pr.bytes}, h), url, kind, wantDim)
	if err != nil {
		return copied{}, err
	}
	if _, err := c.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (id %s NOT NULL, embedding vector(%d) NOT NULL)", l.ident(table), idType, er.dim)); err != nil {
		return copied{}, fmt.Errorf("create %s: %w", table, err)
	}
	n, err := c.CopyFrom(ctx, pgx.Identifier{l.cfg.Schema, table}, []string{"id", "embedding"}, countingSource{er, &pr.rows})
	if err != nil {
		// pgx reports a source error as the server's COPY failure; the reader still has it.
		var ie *InputError
		if errors.As(er.Err(), &ie) {
			return copied{}, ie
		}
		return copied{}, fmt.Errorf("copy %s into %s: %w", url, table, err)
	}
	if int(n) != er.rows {
		return copied{}, fmt.Errorf("copy %s into %s: %d rows copied, %d read", url, table, n, er.rows)
	}
	l.log.Info("embeddings copied", zap.String("stage", "copy"), zap.String("file", url), zap.Int("rows", er.rows),
		zap.Int("dimension", er.dim), zap.Duration("duration", time.Since(start)))
	return copied{dim: er.dim, rows: er.rows, sha: hexSum(h)}, nil
}

// objectSize is key's size in store for the copy's ETA, -1 when the listing does not say.
func objectSize(ctx context.Context, store objstore.Store, key string) int64 {
	objs, err := store.List(ctx, key)
	if err != nil {
		return -1
	}
	for _, o := range objs {
		if o.Key == key {
			return o.Size
		}
	}
	return -1
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// Rollback swaps the previous version back in (item_emb ↔ item_emb_previous, user_emb ↔
// user_emb_previous) in one short transaction; the replaced live version becomes the previous
// one, so a second Rollback undoes the first. ErrNoPreviousVersion when there is none.
func (l *Loader) Rollback(ctx context.Context) (LoadResult, error) {
	conn, release, err := l.lockedConn(ctx)
	if err != nil {
		return LoadResult{}, fmt.Errorf("roll back embeddings: %w", err)
	}
	defer release()
	c := conn.Conn()
	var res LoadResult
	start := time.Now()
	err = l.swap(ctx, c, func(tx pgx.Tx) error {
		var liveID, prevID *int64
		err := tx.QueryRow(ctx, `SELECT
			(SELECT id FROM `+l.ident("embedding_versions")+` WHERE state = 'live'),
			(SELECT id FROM `+l.ident("embedding_versions")+` WHERE state = 'previous')`).Scan(&liveID, &prevID)
		if err != nil {
			return fmt.Errorf("read versions: %w", err)
		}
		var prevTables bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL",
			l.cfg.Schema+".item_emb_previous", l.cfg.Schema+".user_emb_previous").Scan(&prevTables); err != nil {
			return fmt.Errorf("look up previous tables: %w", err)
		}
		if liveID == nil || prevID == nil || !prevTables {
			return ErrNoPreviousVersion
		}
		item, user := l.ident("item_emb"), l.ident("user_emb")
		vt := l.ident("embedding_versions")
		for _, s := range []string{
			"LOCK TABLE " + item + ", " + user + " IN ACCESS EXCLUSIVE MODE",
			"ALTER TABLE " + item + " RENAME TO item_emb_rollback",
			"ALTER TABLE " + user + " RENAME TO user_emb_rollback",
			"ALTER TABLE " + l.ident("item_emb_previous") + " RENAME TO item_emb",
			"ALTER TABLE " + l.ident("user_emb_previous") + " RENAME TO user_emb",
			"ALTER TABLE " + l.ident("item_emb_rollback") + " RENAME TO item_emb_previous",
			"ALTER TABLE " + l.ident("user_emb_rollback") + " RENAME TO user_emb_previous",
			// Three steps: the one-live / one-previous unique indexes are checked per row.
			fmt.Sprintf("UPDATE %s SET state = 'retired' WHERE id = %d", vt, *liveID),
			fmt.Sprintf("UPDATE %s SET state = 'live' WHERE id = %d", vt, *prevID),
			fmt.Sprintf("UPDATE %s SET state = 'previous' WHERE id = %d", vt, *liveID),
		} {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		return tx.QueryRow(ctx, "SELECT version, dimension, item_rows, user_rows, item_sha256, user_sha256 FROM "+vt+" WHERE id = $1", *prevID).
			Scan(&res.Version, &res.Dimension, &res.ItemRows, &res.UserRows, &res.ItemSHA, &res.UserSHA)
	})
	if err != nil {
		return LoadResult{}, fmt.Errorf("roll back embeddings: %w", err)
	}
	res.Swap = time.Since(start)
	l.log.Info("embeddings rolled back", zap.String("version", res.Version), zap.Duration("swap", res.Swap))
	return res, nil
}
