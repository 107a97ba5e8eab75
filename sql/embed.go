// Package schema embeds recstream's numbered SQL migrations (sql/postgres/NNNN_name.sql) and
// applies them, so `recstream migrate`, the jobs that need the schema and the tests all use the
// same files. The package is named schema, not sql, so that it does not clash with database/sql.
//
// Migrations are idempotent (CREATE ... IF NOT EXISTS), applied in version order inside one
// transaction each, recorded in <schema>.schema_migrations, and serialised between processes
// with a PostgreSQL advisory lock, so concurrent starters do not race.
package schema

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
)

//go:embed postgres/*.sql
var postgresFS embed.FS

// Migration is one embedded migration file.
type Migration struct {
	Version int    // NNNN from the file name, unique and increasing
	Name    string // file name, e.g. 0001_vector_extension.sql
	SQL     string // the file's text; may hold several statements
	SHA256  string // hex checksum of SQL, recorded to detect an edited applied migration
}

var fileRe = regexp.MustCompile(`^([0-9]{4})_[a-z0-9_]+\.sql$`)
var identRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// PostgresMigrations returns the embedded PostgreSQL migrations in version order. It fails on a
// badly named file or a duplicate version (a build mistake, caught by this package's tests).
func PostgresMigrations() ([]Migration, error) {
	entries, err := fs.ReadDir(postgresFS, "postgres")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var ms []Migration
	seen := map[int]string{}
	for _, e := range entries {
		m := fileRe.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration %s: name must look like 0001_name.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		if prev, ok := seen[v]; ok {
			return nil, fmt.Errorf("migration %s: version %d already used by %s", e.Name(), v, prev)
		}
		seen[v] = e.Name()
		b, err := postgresFS.ReadFile(path.Join("postgres", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(b)
		ms = append(ms, Migration{Version: v, Name: e.Name(), SQL: string(b), SHA256: hex.EncodeToString(sum[:])})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

// LockKey is the advisory-lock key that serialises migrations of one schema (the first argument
// of the two-key pg_advisory_lock; the second is hashtext(schema)).
const LockKey = 0x72656373 // "recs"

// MigratePostgres applies the pending embedded migrations to schemaName over conn and returns
// the versions it applied (empty when the schema was up to date). It creates the schema when it
// does not exist (which needs CREATE on the database), sets the session's search_path to
// "<schema>, public" (pgvector's types are usually installed in public) and holds a session
// advisory lock while it works, so concurrent callers apply each migration once. An applied
// migration whose checksum no longer matches the embedded file is an error: migrations are
// append-only. conn must not be inside a transaction; it stays usable afterwards.
func MigratePostgres(ctx context.Context, conn *pgx.Conn, schemaName string) ([]int, error) {
	if !identRe.MatchString(schemaName) {
		return nil, fmt.Errorf("migrate schema %q: must be a lower-case SQL identifier", schemaName)
	}
	ms, err := PostgresMigrations()
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1, hashtext($2))", LockKey, schemaName); err != nil {
		return nil, fmt.Errorf("migrate schema %s: take advisory lock: %w", schemaName, err)
	}
	defer func() {
		// A failed unlock (connection gone) releases the lock anyway when the session ends.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1, hashtext($2))", LockKey, schemaName)
	}()

	ident := pgx.Identifier{schemaName}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schemaName).Scan(&exists); err != nil {
		return nil, fmt.Errorf("migrate schema %s: look up schema: %w", schemaName, err)
	}
	if !exists {
		// Only when missing: CREATE SCHEMA IF NOT EXISTS checks the database CREATE privilege
		// even when the schema exists, and a least-privilege role may lack it.
		if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+ident); err != nil {
			return nil, fmt.Errorf("migrate schema %s: create schema: %w", schemaName, err)
		}
	}
	if _, err := conn.Exec(ctx, "SELECT set_config('search_path', $1, false)", ident+", public"); err != nil {
		return nil, fmt.Errorf("migrate schema %s: set search_path: %w", schemaName, err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+ident+`.schema_migrations (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		sha256     text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("migrate schema %s: create schema_migrations: %w", schemaName, err)
	}

	applied := map[int]string{}
	rows, err := conn.Query(ctx, "SELECT version, sha256 FROM "+ident+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrate schema %s: read schema_migrations: %w", schemaName, err)
	}
	for rows.Next() {
		var v int
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			rows.Close()
			return nil, fmt.Errorf("migrate schema %s: read schema_migrations: %w", schemaName, err)
		}
		applied[v] = sum
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrate schema %s: read schema_migrations: %w", schemaName, err)
	}

	var done []int
	for _, m := range ms {
		if sum, ok := applied[m.Version]; ok {
			if sum != m.SHA256 {
				return done, fmt.Errorf("migrate schema %s: migration %s was changed after it was applied (recorded sha256 %s, embedded %s); add a new migration instead",
					schemaName, m.Name, sum, m.SHA256)
			}
			continue
		}
		if err := apply(ctx, conn, ident, m); err != nil {
			return done, fmt.Errorf("migrate schema %s: %w", schemaName, err)
		}
		done = append(done, m.Version)
	}
	return done, nil
}

func apply(ctx context.Context, conn *pgx.Conn, ident string, m Migration) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("apply %s: begin: %w", m.Name, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The simple protocol runs a file holding several statements in one call.
	if _, err := tx.Conn().PgConn().Exec(ctx, m.SQL).ReadAll(); err != nil {
		return fmt.Errorf("apply %s: %w", m.Name, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+ident+".schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
		m.Version, m.Name, m.SHA256); err != nil {
		return fmt.Errorf("apply %s: record: %w", m.Name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("apply %s: commit: %w", m.Name, err)
	}
	return nil
}
