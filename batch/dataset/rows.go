package dataset

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/parquet-go/parquet-go"

	"github.com/recstream/recstream/internal/objstore"
)

// Rating bounds: the source's ratings.productRating CHECK constraint and the ETL's row check,
// so every row of the dataset has a rating in this range.
const (
	MinRating = 1
	MaxRating = 5
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

// FileRow is one row of a data file: the file schema the ETL writes with and ReadTrainingRows
// checks. customerNumber is not in the files (Hive partitioning: it is in the path). Money is
// DECIMAL(10,2) in hundredths; a nil pointer is NULL.
type FileRow struct {
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
var fileSchema = parquet.SchemaOf(FileRow{})

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

// ReadTrainingRows calls fn for every row of the dataset m describes, partition by partition
// in manifest order (rows of one customer are adjacent), on the calling goroutine. The files
// are read and decoded ahead on readWorkers goroutines: a shop's dataset is one small file per
// customer, and decoding a file costs more than fn's work on its rows (at 100,000 customers the
// read took minutes on one core), so both go on in parallel. Memory is a few files' rows. It
// stops at the first error from fn (returned as is) or when a file is missing or does not match
// the schema (an error naming the file).
func ReadTrainingRows(ctx context.Context, store objstore.Store, m *Manifest, fn func(TrainingRow) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		rows []FileRow
		err  error
	}
	type job struct {
		key      string
		customer int
		done     chan result // buffered: a worker never waits for the reader
	}
	jobs := make(chan job)
	// ordered holds the jobs in manifest order; its capacity bounds the files read ahead.
	ordered := make(chan job, 4*readWorkers)
	var wg sync.WaitGroup
	wg.Add(1 + readWorkers)
	go func() {
		defer wg.Done()
		defer close(jobs)
		defer close(ordered)
		for _, p := range m.Partitions {
			for _, f := range p.Files {
				j := job{key: f.Key, customer: p.CustomerNumber, done: make(chan result, 1)}
				select {
				case ordered <- j:
				case <-ctx.Done():
					return
				}
				select {
				case jobs <- j:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	for w := 0; w < readWorkers; w++ {
		go func() {
			defer wg.Done()
			for j := range jobs {
				rows, err := readFile(ctx, store, j.key)
				j.done <- result{rows, err}
			}
		}()
	}
	defer func() { // no goroutine outlives the call
		cancel()
		wg.Wait()
	}()
	for j := range ordered {
		var r result
		select {
		case r = <-j.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.err != nil {
			return r.err
		}
		for i := range r.rows {
			if err := fn(r.rows[i].training(j.customer)); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// readWorkers is how many data files ReadTrainingRows reads and decodes at once.
const readWorkers = 2

// readFile reads and decodes one data file.
func readFile(ctx context.Context, store objstore.Store, key string) ([]FileRow, error) {
	b, err := objstore.ReadAll(ctx, store, key)
	if err != nil {
		return nil, fmt.Errorf("read training data: %w", err)
	}
	rows, err := readParquetRows(b)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", store.URL(key), err)
	}
	return rows, nil
}

// readParquetRows decodes every row of a data file.
func readParquetRows(b []byte) ([]FileRow, error) {
	f, err := parquet.OpenFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, err
	}
	if !parquet.EqualNodes(f.Schema(), fileSchema) {
		return nil, fmt.Errorf("schema mismatch: file has %v", f.Schema())
	}
	r := parquet.NewGenericReader[FileRow](f)
	defer r.Close()
	rows := make([]FileRow, f.NumRows())
	n := 0
	for n < len(rows) {
		k, err := r.Read(rows[n:])
		n += k
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return rows[:n], nil
}

func (r *FileRow) training(customer int) TrainingRow {
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
