package dataset

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

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
// in manifest order (rows of one customer are adjacent). Memory is one data file at a time.
// It stops at the first error from fn (returned as is) or when a file is missing or does not
// match the schema (an error naming the file).
func ReadTrainingRows(ctx context.Context, store objstore.Store, m *Manifest, fn func(TrainingRow) error) error {
	var buf []FileRow
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
				buf = make([]FileRow, 1024)
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

// callbackError carries an error of ReadTrainingRows' fn out of the file reader, so that it is
// returned as fn gave it instead of as a problem of the file.
type callbackError struct{ err error }

var errFromCallback = errors.New("callback")

func (e callbackError) Error() string        { return e.err.Error() }
func (e callbackError) Is(target error) bool { return target == errFromCallback }
func (e callbackError) Unwrap() error        { return e.err }

func readParquetRows(b []byte, customer int, buf []FileRow, fn func(TrainingRow) error) error {
	f, err := parquet.OpenFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return err
	}
	if !parquet.EqualNodes(f.Schema(), fileSchema) {
		return fmt.Errorf("schema mismatch: file has %v", f.Schema())
	}
	r := parquet.NewGenericReader[FileRow](f)
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
