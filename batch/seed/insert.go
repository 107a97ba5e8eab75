package seed

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/recstream/recstream/internal/mysqldb"
)

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
		names[i] = mysqldb.QuoteIdent(c.name)
	}
	return &inserter{
		conn:    conn,
		table:   table,
		prefix:  "INSERT INTO " + mysqldb.QuoteIdent(table) + " (" + strings.Join(names, ",") + ") VALUES ",
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
