// Package batch is the `batch` config section of the cron-run jobs. The jobs are its
// sub-packages, one per job and data store:
//
//   - seed: `batch seed`, the classicmodels schema and its loaders (CSV folder or generator)
//     into the MySQL source database;
//   - etl: `batch etl`, ratings ⋈ products ⋈ customers from MySQL to the S3 datalake as
//     Hive-partitioned Snappy Parquet, published through a manifest;
//   - embeddings: `batch embeddings`, a model version's embeddings from the artifacts store
//     into PostgreSQL + pgvector;
//
// and dataset is the published training dataset that etl writes and train reads. Each job
// takes only its own settings from Config (SeedConfig, ETLConfig).
package batch

import (
	"time"

	"github.com/recstream/recstream/batch/etl"
	"github.com/recstream/recstream/batch/seed"
)

// Config is the `batch` config section. It stays one flat section (config.yaml and the
// RECSTREAM_BATCH_* variables name its keys) although its keys belong to different jobs.
type Config struct {
	// Seed drives the deterministic data generator (batch seed --scale).
	Seed int64 `yaml:"seed"`
	// LockTimeout is how long batch etl waits for the run lock (etl.Config.LockTimeout).
	LockTimeout time.Duration `yaml:"lock_timeout"`
	// InsertBatchRows is the number of rows per multi-row INSERT when seeding.
	InsertBatchRows int `yaml:"insert_batch_rows"`
	// RowGroupRows bounds a Parquet row group and a data file (etl.Config.RowGroupRows).
	RowGroupRows int `yaml:"row_group_rows"`
	// UploadConcurrency is how many finished Parquet files batch etl uploads at once.
	UploadConcurrency int `yaml:"upload_concurrency"`
	// OrphanGrace protects an unfinished sharded run's files from cleanup
	// (etl.Config.OrphanGrace).
	OrphanGrace time.Duration `yaml:"orphan_grace"`
}

// DefaultConfig matches config.yaml: the jobs' defaults and generator seed 42.
func DefaultConfig() Config {
	e, s := etl.DefaultConfig(), seed.DefaultConfig()
	return Config{Seed: 42, LockTimeout: e.LockTimeout, InsertBatchRows: s.InsertBatchRows, RowGroupRows: e.RowGroupRows,
		UploadConcurrency: e.UploadConcurrency, OrphanGrace: e.OrphanGrace}
}

// Validate reports the first invalid field: the ETL's settings are checked first, then
// seeding's.
func (c Config) Validate() error {
	if err := c.ETLConfig().Validate(); err != nil {
		return err
	}
	return c.SeedConfig().Validate()
}

// SeedConfig is the part of c that `batch seed` uses.
func (c Config) SeedConfig() seed.Config {
	return seed.Config{InsertBatchRows: c.InsertBatchRows}
}

// ETLConfig is the part of c that `batch etl` uses.
func (c Config) ETLConfig() etl.Config {
	return etl.Config{LockTimeout: c.LockTimeout, RowGroupRows: c.RowGroupRows, UploadConcurrency: c.UploadConcurrency, OrphanGrace: c.OrphanGrace}
}
