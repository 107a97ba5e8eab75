// Package dataset is the published training dataset, as `recstream batch etl` writes it and
// `recstream train` reads it: its layout, its manifest, its file schema and rows, and the reader
// API. The layout below is part of the contract between the two jobs.
//
//	<datalake>/ratings_ml_training/_manifest.json                   the published dataset
//	<datalake>/ratings_ml_training/customerNumber=<N>/part-<run>_s<i>of<n>_<seq>.snappy.parquet
//	<datalake>/ratings_ml_training/_runs/<run>/shard-<i>-of-<n>.{started,json}  (sharded runs only)
//
// Readers go through the manifest, never through a directory listing: the manifest names the
// complete set of files of the last successful run, and files not in it may be leftovers of a
// run that died or an unfinished sharded run.
package dataset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/recstream/recstream/internal/objstore"
)

const (
	// Prefix is the dataset's key prefix in the datalake store.
	Prefix = "ratings_ml_training"
	// ManifestKey is the key of the published manifest.
	ManifestKey = Prefix + "/_manifest.json"
	// PartitionColumn is the Hive partition column (in the path, not in the files).
	PartitionColumn = "customerNumber"
	// ManifestFormat is the manifest's format version.
	ManifestFormat = 1
)

// ErrNoDataset is returned (wrapped) by ReadManifest when no run has published yet.
var ErrNoDataset = errors.New("no published training dataset (run `recstream batch etl`)")

// Manifest describes one published dataset. Partitions are sorted by customer number.
type Manifest struct {
	Format     int       `json:"format"`
	Dataset    string    `json:"dataset"`
	RunID      string    `json:"run_id"`
	StartedAt  time.Time `json:"started_at"`  // first shard's start
	FinishedAt time.Time `json:"finished_at"` // publish time
	// Shards is n of --shard i/n (1 for an unsharded run); ShardsCovered lists the i's merged.
	Shards        int   `json:"shards"`
	ShardsCovered []int `json:"shards_covered"`
	// SourceRows counts the ratings rows this run read; RunRows those it wrote (SourceRows minus
	// rejected); Rows is the whole dataset, carried-over partitions included (a run publishes
	// once it covers every shard, so none are carried over; see batch/etl's publish).
	SourceRows int64 `json:"source_rows"`
	RunRows    int64 `json:"run_rows"`
	Rows       int64 `json:"rows"`
	// Rejected counts source rows left out, by reason (see RejectReason*).
	Rejected map[string]int64 `json:"rejected"`
	// RemovedPartitions and RemovedRows count the previous dataset's partitions (and their
	// rows) this run removed: customers the source no longer has, or no longer rated.
	RemovedPartitions int            `json:"removed_partitions"`
	RemovedRows       int64          `json:"removed_rows"`
	PartitionColumn   string         `json:"partition_column"`
	Schema            []SchemaColumn `json:"schema"`
	Partitions        []Partition    `json:"partitions"`
}

// SchemaColumn describes one Parquet column of the data files.
type SchemaColumn struct {
	Name     string `json:"name"`
	Physical string `json:"physical"`          // INT32, INT64, BYTE_ARRAY
	Logical  string `json:"logical,omitempty"` // STRING, DECIMAL(10,2)
	Nullable bool   `json:"nullable"`
}

// Partition is one customerNumber=<N> directory.
type Partition struct {
	CustomerNumber int        `json:"customer_number"`
	RunID          string     `json:"run_id"` // the run that wrote it (older when carried over)
	Rows           int64      `json:"rows"`
	Files          []DataFile `json:"files"`
}

// DataFile is one Parquet file of a partition.
type DataFile struct {
	Key   string `json:"key"` // relative to the datalake store
	Rows  int64  `json:"rows"`
	Bytes int64  `json:"bytes"`
}

// Reasons a source row is rejected (counted in Manifest.Rejected, never written).
const (
	RejectRatingOutOfRange = "rating_out_of_range" // productRating NULL or outside 1..5
	RejectUnknownProduct   = "unknown_product"     // no products row for productCode
	RejectUnknownCustomer  = "unknown_customer"    // no customers row for customerNumber
)

// NewManifest returns an empty manifest of run runID over shards shards, with the dataset's
// constants (format, name, partition column, schema) filled in.
func NewManifest(runID string, shards int) *Manifest {
	return &Manifest{
		Format: ManifestFormat, Dataset: Prefix, RunID: runID, Shards: shards,
		Rejected: map[string]int64{}, PartitionColumn: PartitionColumn, Schema: Schema(),
	}
}

// ReadManifest reads the published manifest from the datalake store. It returns an error
// wrapping ErrNoDataset when nothing was published, and an error naming the key when the
// manifest does not parse or has an unknown format.
func ReadManifest(ctx context.Context, store objstore.Store) (*Manifest, error) {
	return ReadManifestAt(ctx, store, ManifestKey)
}

// ReadManifestAt reads a manifest stored at key, such as a shard's part of an unfinished run,
// with ReadManifest's errors.
func ReadManifestAt(ctx context.Context, store objstore.Store, key string) (*Manifest, error) {
	b, err := objstore.ReadAll(ctx, store, key)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil, fmt.Errorf("read manifest %s: %w", store.URL(key), ErrNoDataset)
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse manifest %s: %w", store.URL(key), err)
	}
	if m.Format != ManifestFormat {
		return nil, fmt.Errorf("manifest %s: unknown format %d (want %d)", store.URL(key), m.Format, ManifestFormat)
	}
	return &m, nil
}
