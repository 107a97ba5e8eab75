package batch

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	mysqlsql "github.com/recstream/recstream/sql/mysql"
)

// ErrAlreadySeeded is returned by Seeder.CreateSchema when the tables already hold data and
// replace was not asked for.
var ErrAlreadySeeded = errors.New("source database already holds data (use --replace to drop and reload)")

// SeedStats counts the rows loaded per table.
type SeedStats struct {
	Rows     map[string]int64
	Duration time.Duration
}

// Total is the number of rows loaded over all tables.
func (s SeedStats) Total() int64 {
	var n int64
	for _, v := range s.Rows {
		n += v
	}
	return n
}

// Seeder creates the classicmodels schema and loads it with multi-row INSERT batches. It is
// used by one goroutine at a time.
type Seeder struct {
	db  *sql.DB
	cfg Config
	log *zap.Logger
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
	return &Seeder{db: db, cfg: cfg, log: log}, nil
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
			if _, err := conn.ExecContext(ctx, "DROP TABLE IF EXISTS "+quoteIdent(mysqlsql.Tables[i])); err != nil {
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
			err := conn.QueryRowContext(ctx, "SELECT 1 FROM "+quoteIdent(t)+" LIMIT 1").Scan(&one)
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

// LoadCSVDir loads <dir>/<table>.csv for every classicmodels table plus ratings.csv, in
// foreign-key order, with foreign-key checks on. A header must name exactly the table's
// columns (any order). A bad record stops the load with an error naming the file and line;
// rows already inserted stay (rerun with --replace).
func (s *Seeder) LoadCSVDir(ctx context.Context, dir string) (SeedStats, error) {
	start := time.Now()
	st := SeedStats{Rows: map[string]int64{}}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return st, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	for _, spec := range tableSpecs {
		path := filepath.Join(dir, spec.name+".csv")
		n, err := s.loadCSVFile(ctx, conn, spec, path)
		st.Rows[spec.name] = n
		if err != nil {
			return st, err
		}
		s.log.Debug("loaded table", zap.String("table", spec.name), zap.Int64("records", n))
	}
	st.Duration = time.Since(start)
	return st, nil
}

func (s *Seeder) loadCSVFile(ctx context.Context, conn *sql.Conn, spec tableSpec, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("load %s: %w", spec.name, err)
	}
	defer f.Close()
	return s.loadCSV(ctx, conn, spec, f, filepath.Base(path))
}

// loadCSV streams one table's CSV into MySQL.
func (s *Seeder) loadCSV(ctx context.Context, conn *sql.Conn, spec tableSpec, r io.Reader, name string) (int64, error) {
	cr := NewCSVReader(r, name)
	header, err := cr.Read()
	if err == io.EOF {
		return 0, &CSVError{File: name, Line: 1, Err: errEmptyFileHeader}
	}
	if err != nil {
		return 0, err
	}
	// order[k] = index in the CSV record of spec column k.
	order := make([]int, len(spec.cols))
	pos := map[string]int{}
	for i, h := range header {
		if _, dup := pos[h.Value]; dup {
			return 0, &CSVError{File: name, Line: 1, Err: fmt.Errorf("%w: %q", errDuplicateColumns, h.Value)}
		}
		pos[h.Value] = i
	}
	for k, c := range spec.cols {
		i, ok := pos[c.name]
		if !ok {
			return 0, &CSVError{File: name, Line: 1, Err: fmt.Errorf("header: missing column %q", c.name)}
		}
		order[k] = i
	}
	if len(header) != len(spec.cols) {
		return 0, &CSVError{File: name, Line: 1, Err: fmt.Errorf("header: has %d columns, table %s has %d", len(header), spec.name, len(spec.cols))}
	}
	ins := newInserter(conn, spec.name, spec.cols, s.cfg.InsertBatchRows)
	var n int64
	for {
		line := cr.Line()
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, err
		}
		if len(rec) != len(header) {
			return n, &CSVError{File: name, Line: line, Err: fmt.Errorf("%w: got %d, header has %d", errFieldCount, len(rec), len(header))}
		}
		vals := make([]any, len(spec.cols))
		for k, c := range spec.cols {
			v, err := c.convert(rec[order[k]])
			if err != nil {
				return n, &CSVError{File: name, Line: line, Err: err}
			}
			vals[k] = v
		}
		if spec.check != nil {
			if err := spec.check(vals); err != nil {
				return n, &CSVError{File: name, Line: line, Err: err}
			}
		}
		if err := ins.add(ctx, vals, fmt.Sprintf("%s:%d", name, line)); err != nil {
			return n, err
		}
		n++
	}
	if err := ins.flush(ctx); err != nil {
		return n, err
	}
	return n, nil
}

// maxPlaceholders is MySQL's limit on placeholders in one prepared statement; interpolated
// statements have no such limit but stay below it so a batch also fits max_allowed_packet.
const (
	maxPlaceholders = 65535
	maxBatchBytes   = 4 << 20
)

// inserter accumulates rows for one table and writes them as multi-row INSERTs.
type inserter struct {
	conn    *sql.Conn
	table   string
	prefix  string
	row     string
	maxRows int
	args    []any
	rows    int
	bytes   int
	first   string // where the batch's first row came from, for errors
	last    string
}

func newInserter(conn *sql.Conn, table string, cols []column, batchRows int) *inserter {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = quoteIdent(c.name)
	}
	return &inserter{
		conn:    conn,
		table:   table,
		prefix:  "INSERT INTO " + quoteIdent(table) + " (" + strings.Join(names, ",") + ") VALUES ",
		row:     "(" + strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",") + ")",
		maxRows: max(1, min(batchRows, maxPlaceholders/len(cols))),
	}
}

// add queues one row; origin names it in errors ("customers.csv:12").
func (in *inserter) add(ctx context.Context, vals []any, origin string) error {
	if in.rows == 0 {
		in.first = origin
	}
	in.last = origin
	in.args = append(in.args, vals...)
	in.rows++
	for _, v := range vals {
		if s, ok := v.(string); ok {
			in.bytes += len(s) + 4
		} else {
			in.bytes += 8
		}
	}
	if in.rows >= in.maxRows || in.bytes >= maxBatchBytes {
		return in.flush(ctx)
	}
	return nil
}

func (in *inserter) flush(ctx context.Context) error {
	if in.rows == 0 {
		return nil
	}
	var b strings.Builder
	b.Grow(len(in.prefix) + in.rows*(len(in.row)+1))
	b.WriteString(in.prefix)
	for i := 0; i < in.rows; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(in.row)
	}
	if _, err := in.conn.ExecContext(ctx, b.String(), in.args...); err != nil {
		if in.first != "" {
			return fmt.Errorf("insert %s rows %s..%s: %w", in.table, in.first, in.last, err)
		}
		return fmt.Errorf("insert %d %s rows: %w", in.rows, in.table, err)
	}
	clear(in.args)
	in.args = in.args[:0]
	in.rows, in.bytes = 0, 0
	return nil
}

func nullable[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func day(t time.Time) string { return t.Format(time.DateOnly) }

// LoadGenerated loads g's data. Foreign-key checks are off for the session (the generator is
// consistent by construction) so the tables can be filled in one pass over the customers.
// progress, if not nil, is called with the number of ratings loaded so far.
func (s *Seeder) LoadGenerated(ctx context.Context, g *Generator, progress func(ratings int64)) (SeedStats, error) {
	start := time.Now()
	st := SeedStats{Rows: map[string]int64{}}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return st, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET SESSION foreign_key_checks = 0"); err != nil {
		return st, fmt.Errorf("disable foreign key checks: %w", err)
	}
	// A pooled connection must not go back with checks off.
	defer conn.ExecContext(context.WithoutCancel(ctx), "SET SESSION foreign_key_checks = 1") //nolint:errcheck

	ins := map[string]*inserter{}
	for _, spec := range tableSpecs {
		ins[spec.name] = newInserter(conn, spec.name, spec.cols, s.cfg.InsertBatchRows)
	}
	add := func(table string, vals ...any) error {
		st.Rows[table]++
		return ins[table].add(ctx, vals, "")
	}
	for _, l := range g.ProductLines() {
		if err := add("productlines", l, "Generated product line "+l+".", nil, nil); err != nil {
			return st, err
		}
	}
	for _, o := range g.Offices() {
		if err := add("offices", o.Code, o.City, o.Phone, o.AddressLine1, nullable(o.AddressLine2), nullable(o.State), o.Country, o.PostalCode, o.Territory); err != nil {
			return st, err
		}
	}
	for _, e := range g.Employees() {
		if err := add("employees", e.Number, e.LastName, e.FirstName, e.Extension, e.Email, e.OfficeCode, nullable(e.ReportsTo), e.JobTitle); err != nil {
			return st, err
		}
	}
	for _, p := range g.Products() {
		if err := add("products", p.Code, p.Name, p.Line, p.Scale, p.Vendor, p.Description, p.QuantityInStock, formatDecimal2(p.BuyPriceCents), formatDecimal2(p.MSRPCents)); err != nil {
			return st, err
		}
	}
	err = g.Each(ctx, func(d CustomerData) error {
		c := d.Customer
		if err := add("customers", c.Number, c.Name, c.ContactLastName, c.ContactFirstName, c.Phone, c.AddressLine1, nullable(c.AddressLine2), c.City, nullable(c.State), nullable(c.PostalCode), c.Country, nullable(c.SalesRep), formatDecimal2(c.CreditLimitCents)); err != nil {
			return err
		}
		for _, o := range d.Orders {
			var shipped any
			if o.ShippedDate != nil {
				shipped = day(*o.ShippedDate)
			}
			if err := add("orders", o.Number, day(o.OrderDate), day(o.RequiredDate), shipped, o.Status, nullable(o.Comments), o.CustomerNumber); err != nil {
				return err
			}
			var total int64
			for _, l := range o.Lines {
				total += l.PriceEachCents * int64(l.QuantityOrdered)
				if err := add("orderdetails", o.Number, l.ProductCode, l.QuantityOrdered, formatDecimal2(l.PriceEachCents), l.LineNumber); err != nil {
					return err
				}
			}
			if err := add("payments", o.CustomerNumber, o.CheckNumber, day(o.OrderDate.AddDate(0, 0, 3)), formatDecimal2(min(total, maxDecimal10_2))); err != nil {
				return err
			}
		}
		for _, r := range d.Ratings {
			if err := add("ratings", r.CustomerNumber, r.ProductCode, r.Rating); err != nil {
				return err
			}
		}
		if progress != nil {
			progress(st.Rows["ratings"])
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("generate: %w", err)
	}
	for _, spec := range tableSpecs {
		if err := ins[spec.name].flush(ctx); err != nil {
			return st, err
		}
	}
	st.Duration = time.Since(start)
	return st, nil
}
