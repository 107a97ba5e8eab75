// Package batch holds the cron-run jobs: seeding the classicmodels source database, the ETL
// that turns ratings ⋈ products ⋈ customers into Hive-partitioned Snappy Parquet, and the
// loader that puts model embeddings into PostgreSQL + pgvector.
package batch

import (
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MySQLConfig is the `mysql` config section (the classicmodels source database).
type MySQLConfig struct {
	// DSN in go-sql-driver form without the password: user@tcp(host:3306)/classicmodels.
	DSN string `yaml:"dsn"`
	// Password comes only from RECSTREAM_MYSQL_PASSWORD.
	Password     string `yaml:"password" secret:"true"`
	MaxOpenConns int    `yaml:"max_open_conns"`
}

// DefaultMySQLConfig matches the local stack.
func DefaultMySQLConfig() MySQLConfig {
	return MySQLConfig{DSN: "recstream@tcp(127.0.0.1:3306)/classicmodels", MaxOpenConns: 4}
}

// Validate reports the first invalid field.
func (c MySQLConfig) Validate() error {
	if c.DSN == "" {
		return errors.New("dsn: must not be empty")
	}
	if _, err := mysql.ParseDSN(c.DSN); err != nil {
		return errors.New("dsn: cannot parse (value not shown: it may hold credentials)")
	}
	if c.MaxOpenConns < 1 {
		return fmt.Errorf("max_open_conns: must be >= 1, got %d", c.MaxOpenConns)
	}
	return nil
}

// Config is the `batch` config section.
type Config struct {
	// Seed drives the deterministic data generator (batch seed --scale).
	Seed int64 `yaml:"seed"`
	// LockTimeout is how long batch etl waits for the run lock before giving up (0: do not wait).
	LockTimeout time.Duration `yaml:"lock_timeout"`
	// InsertBatchRows is the number of rows per multi-row INSERT when seeding.
	InsertBatchRows int `yaml:"insert_batch_rows"`
	// RowGroupRows bounds a Parquet row group (and so the ETL's memory per open partition).
	// The ETL also starts a new file in a partition after this many rows, so one file is one
	// row group and memory stays bounded however many ratings one customer has.
	RowGroupRows int `yaml:"row_group_rows"`
	// UploadConcurrency is how many finished Parquet files batch etl uploads at once.
	UploadConcurrency int `yaml:"upload_concurrency"`
	// OrphanGrace protects the files of an unfinished sharded run (n > 1) from orphan cleanup
	// for this long after its last shard marker; it must exceed the time between the first and
	// the last shard task of one run.
	OrphanGrace time.Duration `yaml:"orphan_grace"`
}

// DefaultConfig matches config.yaml.
func DefaultConfig() Config {
	return Config{Seed: 42, LockTimeout: 0, InsertBatchRows: 2000, RowGroupRows: 50000, UploadConcurrency: 8, OrphanGrace: 6 * time.Hour}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.LockTimeout < 0 {
		return fmt.Errorf("lock_timeout: must be >= 0, got %s", c.LockTimeout)
	}
	if c.InsertBatchRows < 1 || c.InsertBatchRows > 100000 {
		return fmt.Errorf("insert_batch_rows: must be between 1 and 100000, got %d", c.InsertBatchRows)
	}
	if c.RowGroupRows < 1 {
		return fmt.Errorf("row_group_rows: must be >= 1, got %d", c.RowGroupRows)
	}
	if c.UploadConcurrency < 1 || c.UploadConcurrency > 256 {
		return fmt.Errorf("upload_concurrency: must be between 1 and 256, got %d", c.UploadConcurrency)
	}
	if c.OrphanGrace < 0 {
		return fmt.Errorf("orphan_grace: must be >= 0, got %s", c.OrphanGrace)
	}
	return nil
}
