package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/recstream/recstream/internal/objstore"
)

// The published training dataset, as `recstream batch etl` writes it and `recstream train`
// reads it. This file is the stable reader API; the layout below is part of the contract.
//
//	<datalake>/ratings_ml_training/_manifest.json                   the published dataset
//	<datalake>/ratings_ml_training/customerNumber=<N>/part-<run>_s<i>of<n>_<seq>.snappy.parquet
//	<datalake>/ratings_ml_training/_runs/<run>/shard-<i>-of-<n>.{started,json}  (sharded runs only)
//
// Readers go through the manifest, never through a directory listing: the manifest names the
// complete set of files of the last successful run, and files not in it may be leftovers of a
// run that died or an unfinished sharded run.
const (
	// DatasetPrefix is the dataset's key prefix in the datalake store.
	DatasetPrefix = "ratings_ml_training"
	// ManifestKey is the key of the published manifest.
	ManifestKey = DatasetPrefix + "/_manifest.json"
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
	// once it covers every shard, so none are carried over; see ETL.publish).
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

// TrainingRow is one row of the training dataset: the lab's
// ratings ⋈ products ⋈ customers projection. Money is DECIMAL(10,2): the *Cents fields are
// exact, the float64 fields are the same value for model code.
type TrainingRow struct {
	CustomerNumber   int
	City             string
	State            *string // NULL for most non-US customers
	PostalCode       *string
	Country          string
	CreditLimit      float64 // 0 when CreditLimitNull
	CreditLimitCents int64
	CreditLimitNull  bool
	ProductCode      string
	ProductLine      string
	ProductScale     string
	QuantityInStock  int
	BuyPrice         float64
	BuyPriceCents    int64
	MSRP             float64
	MSRPCents        int64
	ProductRating    int
}

// parquetRow is the file schema. customerNumber is not in the files (Hive partitioning).
type parquetRow struct {
	City            string  `parquet:"city"`
	State           *string `parquet:"state,optional"`
	PostalCode      *string `parquet:"postalCode,optional"`
	Country         string  `parquet:"country"`
	CreditLimit     *int64  `parquet:"creditLimit,optional,decimal(2:10)"`
	ProductCode     string  `parquet:"productCode"`
	ProductLine     string  `parquet:"productLine"`
	ProductScale    string  `parquet:"productScale"`
	QuantityInStock int32   `parquet:"quantityInStock"`
	BuyPrice        int64   `parquet:"buyPrice,decimal(2:10)"`
	MSRP            int64   `parquet:"MSRP,decimal(2:10)"`
	ProductRating   int32   `parquet:"productRating"`
}

// fileSchema is the schema every data file is written with.
var fileSchema = parquet.SchemaOf(parquetRow{})

// Schema returns the data files' columns in file order (the manifest records the same list).
func Schema() []SchemaColumn {
	return []SchemaColumn{
		{"city", "BYTE_ARRAY", "STRING", false},
		{"state", "BYTE_ARRAY", "STRING", true},
		{"postalCode", "BYTE_ARRAY", "STRING", true},
		{"country", "BYTE_ARRAY", "STRING", false},
		{"creditLimit", "INT64", "DECIMAL(10,2)", true},
		{"productCode", "BYTE_ARRAY", "STRING", false},
		{"productLine", "BYTE_ARRAY", "STRING", false},
		{"productScale", "BYTE_ARRAY", "STRING", false},
		{"quantityInStock", "INT32", "", false},
		{"buyPrice", "INT64", "DECIMAL(10,2)", false},
		{"MSRP", "INT64", "DECIMAL(10,2)", false},
		{"productRating", "INT32", "", false},
	}
}

// ReadManifest reads the published manifest from the datalake store. It returns an error
// wrapping ErrNoDataset when nothing was published, and an error naming the key when the
// manifest does not parse or has an unknown format.
func ReadManifest(ctx context.Context, store objstore.Store) (*Manifest, error) {
	return readManifestKey(ctx, store, ManifestKey)
}

func readManifestKey(ctx context.Context, store objstore.Store, key string) (*Manifest, error) {
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

// ReadTrainingRows calls fn for every row of the dataset m describes, partition by partition
// in manifest order (rows of one customer are adjacent). Memory is one data file at a time.
// It stops at the first error from fn (returned as is) or when a file is missing or does not
// match the schema (an error naming the file).
func ReadTrainingRows(ctx context.Context, store objstore.Store, m *Manifest, fn func(TrainingRow) error) error {
	var buf []parquetRow
	for _, p := range m.Partitions {
		for _, f := range p.Files {
			if err := ctx.Err(); err != nil {
				return err
			}
			b, err := objstore.ReadAll(ctx, store, f.Key)
			if err != nil {
				return fmt.Errorf("read training data: %w", err)
			}
			if buf == nil {
				buf = make([]parquetRow, 1024)
			}
			if err := readParquetRows(b, p.CustomerNumber, buf, fn); err != nil {
				if errors.Is(err, errFromCallback) {
					return errors.Unwrap(err)
				}
				return fmt.Errorf("read %s: %w", store.URL(f.Key), err)
			}
		}
	}
	return nil
}

type callbackError struct{ err error }

var errFromCallback = errors.New("callback")

func (e callbackError) Error() string        { return e.err.Error() }
func (e callbackError) Is(target error) bool { return target == errFromCallback }
func (e callbackError) Unwrap() error        { return e.err }

func readParquetRows(b []byte, customer int, buf []parquetRow, fn func(TrainingRow) error) error {
	f, err := parquet.OpenFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return err
	}
	if !parquet.EqualNodes(f.Schema(), fileSchema) {
		return fmt.Errorf("schema mismatch: file has %v", f.Schema())
	}
	r := parquet.NewGenericReader[parquetRow](f)
	defer r.Close()
	for {
		n, err := r.Read(buf)
		for i := 0; i < n; i++ {
			if cerr := fn(buf[i].training(customer)); cerr != nil {
				return callbackError{cerr}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (r *parquetRow) training(customer int) TrainingRow {
	t := TrainingRow{
		CustomerNumber:  customer,
		City:            r.City,
		State:           r.State,
		PostalCode:      r.PostalCode,
		Country:         r.Country,
		ProductCode:     r.ProductCode,
		ProductLine:     r.ProductLine,
		ProductScale:    r.ProductScale,
		QuantityInStock: int(r.QuantityInStock),
		BuyPrice:        float64(r.BuyPrice) / 100,
		BuyPriceCents:   r.BuyPrice,
		MSRP:            float64(r.MSRP) / 100,
		MSRPCents:       r.MSRP,
		ProductRating:   int(r.ProductRating),
	}
	if r.CreditLimit == nil {
		t.CreditLimitNull = true
	} else {
		t.CreditLimitCents = *r.CreditLimit
		t.CreditLimit = float64(*r.CreditLimit) / 100
	}
	return t
}
