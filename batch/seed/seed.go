// Package seed is `recstream batch seed`: it creates the classicmodels schema in the source
// database and loads it, either from a folder of classicmodels CSVs (csvdir.go, checked value by
// value against tables.go) or from the deterministic generator (generate.go), with multi-row
// INSERT batches (insert.go).
package seed

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/mysqldb"
	mysqlsql "github.com/recstream/recstream/sql/mysql"
)

// ErrAlreadySeeded is returned by Seeder.CreateSchema when the tables already hold data and
// replace was not asked for.
var ErrAlreadySeeded = errors.New("source database already holds data (use --replace to drop and reload)")

// Stats counts the rows loaded per table.
type Stats struct {
	Rows     map[string]int64
	Duration time.Duration
}

// Total is the number of rows loaded over all tables.
func (s Stats) Total() int64 {
	var n int64
	for _, v := range s.Rows {
		n += v
	}
	return n
}

// Config is what seeding takes from the `batch` config section.
type Config struct {
	// InsertBatchRows is the number of rows per multi-row INSERT.
	InsertBatchRows int
}

// DefaultConfig matches config.yaml.
func DefaultConfig() Config { return Config{InsertBatchRows: 2000} }

// Validate reports the first invalid field, named as in config.yaml.
func (c Config) Validate() error {
	if c.InsertBatchRows < 1 || c.InsertBatchRows > 100000 {
		return fmt.Errorf("insert_batch_rows: must be between 1 and 100000, got %d", c.InsertBatchRows)
	}
	return nil
}

// Seeder creates the classicmodels schema and loads it with multi-row INSERT batches. It is
// used by one goroutine at a time.
type Seeder struct {
	db  *sql.DB
	cfg Config
	log *zap.Logger
	// progressEvery is the interval of LoadGenerated's progress lines (tests shorten it).
	progressEvery time.Duration
}

// NewSeeder validates cfg; it does no I/O.
func NewSeeder(db *sql.DB, cfg Config, log *zap.Logger) (*Seeder, error) {
	if db == nil {
		return nil, errors.New("seeder: nil database")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("seeder: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Seeder{db: db, cfg: cfg, log: log.With(zap.String("component", "seed")), progressEvery: progressInterval}, nil
}

// CreateSchema applies sql/mysql. With replace it first drops the classicmodels tables (data
// included); without it, it returns ErrAlreadySeeded when customers or ratings hold rows.
func (s *Seeder) CreateSchema(ctx context.Context, replace bool) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if replace {
		if _, err := conn.ExecContext(ctx, "SET SESSION foreign_key_checks = 0"); err != nil {
			return fmt.Errorf("disable foreign key checks: %w", err)
		}
		for i := len(mysqlsql.Tables) - 1; i >= 0; i-- {
			if _, err := conn.ExecContext(ctx, "DROP TABLE IF EXISTS "+mysqldb.QuoteIdent(mysqlsql.Tables[i])); err != nil {
				return fmt.Errorf("drop table %s: %w", mysqlsql.Tables[i], err)
			}
		}
		if _, err := conn.ExecContext(ctx, "SET SESSION foreign_key_checks = 1"); err != nil {
			return fmt.Errorf("enable foreign key checks: %w", err)
		}
	}
	for i, stmt := range mysqlsql.Statements() {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("create table %s: %w", mysqlsql.Tables[i], err)
		}
	}
	if !replace {
		for _, t := range []string{"customers", "ratings"} {
			var one int
			err := conn.QueryRowContext(ctx, "SELECT 1 FROM "+mysqldb.QuoteIdent(t)+" LIMIT 1").Scan(&one)
			if err == nil {
				return ErrAlreadySeeded
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("check table %s: %w", t, err)
			}
		}
	}
	return nil
}
