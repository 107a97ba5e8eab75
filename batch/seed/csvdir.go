package seed

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/csvio"
)

// Reasons a CSV header is rejected (wrapped in *csvio.Error).
var (
	errEmptyFileHeader  = errors.New("empty file: missing header row")
	errDuplicateColumns = errors.New("duplicate column in header")
)

// LoadCSVDir loads <dir>/<table>.csv for every classicmodels table plus ratings.csv, in
// foreign-key order, with foreign-key checks on. A header must name exactly the table's
// columns (any order). A bad record stops the load with an error naming the file and line;
// rows already inserted stay (rerun with --replace).
func (s *Seeder) LoadCSVDir(ctx context.Context, dir string) (Stats, error) {
	start := time.Now()
	st := Stats{Rows: map[string]int64{}}
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
	cr := csvio.NewReader(r, name)
	header, err := cr.Read()
	if err == io.EOF {
		return 0, &csvio.Error{File: name, Line: 1, Err: errEmptyFileHeader}
	}
	if err != nil {
		return 0, err
	}
	// order[k] = index in the CSV record of spec column k.
	order := make([]int, len(spec.cols))
	pos := map[string]int{}
	for i, h := range header {
		if _, dup := pos[h.Value]; dup {
			return 0, &csvio.Error{File: name, Line: 1, Err: fmt.Errorf("%w: %q", errDuplicateColumns, h.Value)}
		}
		pos[h.Value] = i
	}
	for k, c := range spec.cols {
		i, ok := pos[c.name]
		if !ok {
			return 0, &csvio.Error{File: name, Line: 1, Err: fmt.Errorf("header: missing column %q", c.name)}
		}
		order[k] = i
	}
	if len(header) != len(spec.cols) {
		return 0, &csvio.Error{File: name, Line: 1, Err: fmt.Errorf("header: has %d columns, table %s has %d", len(header), spec.name, len(spec.cols))}
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
			return n, &csvio.Error{File: name, Line: line, Err: fmt.Errorf("%w: got %d, header has %d", csvio.ErrFieldCount, len(rec), len(header))}
		}
		vals := make([]any, len(spec.cols))
		for k, c := range spec.cols {
			v, err := c.convert(rec[order[k]])
			if err != nil {
				return n, &csvio.Error{File: name, Line: line, Err: err}
			}
			vals[k] = v
		}
		if spec.check != nil {
			if err := spec.check(vals); err != nil {
				return n, &csvio.Error{File: name, Line: line, Err: err}
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
