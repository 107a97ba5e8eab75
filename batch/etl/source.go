package etl

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/internal/mysqldb"
)

// The lab's join, ratings r JOIN products p JOIN customers c, is done here as a merge join
// rather than in SQL: MySQL streams ratings in primary-key order (customerNumber,
// productCode) with no join work, customers stream in customerNumber order on a second
// connection, and the product catalogue (small: 110 rows real, customers/10 generated) is held
// in a map. On 1M ratings this cuts the server's work about ninefold compared with two eq_ref
// joins per row. Left-join semantics let rows the lab's inner join would silently drop (unknown
// product or customer) be counted as rejected. Like the Glue job's separate JDBC reads, the
// three statements are not one snapshot: a customer inserted during the run may count as
// unknown for its ratings; the next run picks it up.

// ShardOf returns the shard of customerNumber among n: crc32 (IEEE) of its decimal text mod n,
// which is what MySQL's CRC32(customerNumber) % n computes server-side.
func ShardOf(customerNumber, n int) int {
	return int(crc32.ChecksumIEEE([]byte(strconv.Itoa(customerNumber))) % uint32(n))
}

func (j *Job) shardFilter(col string) (string, []any) {
	if !j.sharded() {
		return "", nil
	}
	return " WHERE CRC32(" + col + ") % ? = ?", []any{j.opts.Shards, j.opts.Shard}
}

func (j *Job) ratingsQuery() (string, []any) {
	w, args := j.shardFilter("customerNumber")
	return "SELECT customerNumber, productCode, productRating FROM ratings" + w + " ORDER BY customerNumber, productCode", args
}

func (j *Job) customersQuery() (string, []any) {
	w, args := j.shardFilter("customerNumber")
	return "SELECT customerNumber, city, state, postalCode, country, creditLimit FROM customers" + w + " ORDER BY customerNumber", args
}

const productsQuery = "SELECT productCode, productLine, productScale, quantityInStock, buyPrice, MSRP FROM products"

// sourceQueries are the statements a run executes, for the dry-run plan.
func (j *Job) sourceQueries() []string {
	r, _ := j.ratingsQuery()
	c, _ := j.customersQuery()
	return []string{productsQuery, r, c}
}

// CountSourceRows counts the ratings rows this run will read (for a progress bar or a plan).
func (j *Job) CountSourceRows(ctx context.Context) (int64, error) {
	q := "SELECT COUNT(*) FROM ratings r"
	var args []any
	if j.sharded() {
		q += " WHERE CRC32(r.customerNumber) % ? = ?"
		args = append(args, j.opts.Shards, j.opts.Shard)
	}
	var n int64
	if err := j.db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count ratings: %w", err)
	}
	return n, nil
}

// sourceRow is one ratings row of the shard, joined: either row, the data file row of
// customer's partition, or reject, the reason the row is left out (dataset.Reject*).
type sourceRow struct {
	customer int
	row      dataset.FileRow
	reject   string
}

// source streams the shard's ratings joined with their customers and products, in
// (customerNumber, productCode) order. It holds two connections until close.
type source struct {
	conns     []*sql.Conn
	ratings   *sql.Rows
	customers *customerCursor
	products  map[string]*productCols
	raw       [3]sql.RawBytes
	dest      []any         // &raw[i], built once: Scan is called per row
	lastCN    int           // customer number of the previous ratings row
	cust      *customerCols // its customer, nil when unknown
}

// openSource loads the products and starts the ratings and customers queries, each on a
// connection of its own (two result sets cannot stream on one MySQL connection).
func (j *Job) openSource(ctx context.Context) (_ *source, err error) {
	s := &source{lastCN: -1}
	s.dest = []any{&s.raw[0], &s.raw[1], &s.raw[2]}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	qconn, err := j.streamingConn(ctx)
	if err != nil {
		return nil, err
	}
	s.conns = append(s.conns, qconn)
	if s.products, err = loadProducts(ctx, qconn); err != nil {
		return nil, err
	}
	cconn, err := j.streamingConn(ctx)
	if err != nil {
		return nil, err
	}
	s.conns = append(s.conns, cconn)
	cq, cargs := j.customersQuery()
	crows, err := cconn.QueryContext(ctx, cq, cargs...)
	if err != nil {
		return nil, fmt.Errorf("query customers: %w", err)
	}
	s.customers = &customerCursor{rows: crows}
	q, args := j.ratingsQuery()
	if s.ratings, err = qconn.QueryContext(ctx, q, args...); err != nil {
		return nil, fmt.Errorf("query ratings: %w", err)
	}
	return s, nil
}

// streamingConn returns a connection for a long result set. The server waits on us while a
// file uploads; give slow object storage room.
func (j *Job) streamingConn(ctx context.Context) (*sql.Conn, error) {
	conn, err := j.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "SET SESSION net_write_timeout = 600"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("set net_write_timeout: %w", err)
	}
	return conn, nil
}

// close ends the result sets and returns the connections to the pool.
func (s *source) close() {
	if s.ratings != nil {
		s.ratings.Close()
	}
	if s.customers != nil {
		s.customers.rows.Close()
	}
	for i := len(s.conns) - 1; i >= 0; i-- {
		s.conns[i].Close()
	}
}

// next returns the next ratings row, joined or rejected; io.EOF after the last one, once both
// result sets ended cleanly.
func (s *source) next() (sourceRow, error) {
	if !s.ratings.Next() {
		if err := s.ratings.Err(); err != nil {
			return sourceRow{}, fmt.Errorf("read ratings: %w", err)
		}
		if err := s.customers.err(); err != nil {
			return sourceRow{}, err
		}
		return sourceRow{}, io.EOF
	}
	raw := &s.raw
	if err := s.ratings.Scan(s.dest...); err != nil {
		return sourceRow{}, fmt.Errorf("scan ratings: %w", err)
	}
	cn, err := atoi(raw[0])
	if err != nil {
		return sourceRow{}, fmt.Errorf("ratings.customerNumber %q: %w", raw[0], err)
	}
	if cn != s.lastCN {
		if cn < s.lastCN {
			return sourceRow{}, fmt.Errorf("ratings not ordered by customerNumber: %d after %d", cn, s.lastCN)
		}
		s.lastCN = cn
		if s.cust, err = s.customers.seek(cn); err != nil {
			return sourceRow{}, err
		}
	}
	out := sourceRow{customer: cn}
	rating, rerr := atoi(raw[2])
	p := s.products[string(raw[1])]
	switch {
	case raw[2] == nil || rerr != nil || rating < dataset.MinRating || rating > dataset.MaxRating:
		out.reject = dataset.RejectRatingOutOfRange
	case p == nil:
		out.reject = dataset.RejectUnknownProduct
	case s.cust == nil:
		out.reject = dataset.RejectUnknownCustomer
	default:
		c := s.cust
		out.row = dataset.FileRow{
			City: c.city, State: c.state, PostalCode: c.postalCode, Country: c.country, CreditLimit: c.creditLimit,
			ProductCode: p.code, ProductLine: p.line, ProductScale: p.scale, QuantityInStock: p.qty, BuyPrice: p.buy, MSRP: p.msrp,
			ProductRating: int32(rating),
		}
	}
	return out, nil
}

// atoi parses a non-negative or negative decimal integer column without allocating.
func atoi(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, errors.New("empty integer")
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, errors.New("bad integer")
		}
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' || n > (1<<53) {
			return 0, errors.New("bad integer")
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}

// customerCols are one customer's columns.
type customerCols struct {
	city, country     string
	state, postalCode *string
	creditLimit       *int64
}

// customerCursor walks the customers stream in customerNumber order alongside the ratings.
type customerCursor struct {
	rows *sql.Rows
	raw  [6]sql.RawBytes
	num  int               // customerNumber of the row in raw; valid while have && !done
	have bool              // a row has been read
	done bool              // the stream is exhausted
	strs map[string]string // cities and countries repeat: share the strings
}

// seek advances to customer n and returns its columns, or nil when there is no such customer.
// Calls must come with increasing n.
func (c *customerCursor) seek(n int) (*customerCols, error) {
	for !c.done && (!c.have || c.num < n) {
		if !c.rows.Next() {
			c.done = true
			break
		}
		if err := c.rows.Scan(&c.raw[0], &c.raw[1], &c.raw[2], &c.raw[3], &c.raw[4], &c.raw[5]); err != nil {
			return nil, fmt.Errorf("scan customers: %w", err)
		}
		num, err := atoi(c.raw[0])
		if err != nil {
			return nil, fmt.Errorf("customers.customerNumber %q: %w", c.raw[0], err)
		}
		if c.have && num <= c.num {
			return nil, fmt.Errorf("customers not ordered by customerNumber: %d after %d", num, c.num)
		}
		c.num, c.have = num, true
	}
	if c.done || c.num != n {
		return nil, nil
	}
	cols := &customerCols{city: c.str(c.raw[1]), country: c.str(c.raw[4])}
	if c.raw[2] != nil {
		s := c.str(c.raw[2])
		cols.state = &s
	}
	if c.raw[3] != nil {
		s := c.str(c.raw[3])
		cols.postalCode = &s
	}
	if c.raw[5] != nil {
		v, err := mysqldb.ParseDecimal2(string(c.raw[5]))
		if err != nil {
			return nil, fmt.Errorf("customer %d creditLimit: %w", n, err)
		}
		cols.creditLimit = &v
	}
	return cols, nil
}

// str returns b as a string shared with earlier equal values (up to 65,536 of them).
func (c *customerCursor) str(b []byte) string {
	if c.strs == nil {
		c.strs = map[string]string{}
	}
	if s, ok := c.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(c.strs) < 1<<16 {
		c.strs[s] = s
	}
	return s
}

func (c *customerCursor) err() error {
	if err := c.rows.Err(); err != nil {
		return fmt.Errorf("read customers: %w", err)
	}
	return nil
}

// productCols are one product's columns.
type productCols struct {
	code, line, scale string
	qty               int32
	buy, msrp         int64
}

// loadProducts reads the product catalogue into memory.
func loadProducts(ctx context.Context, conn *sql.Conn) (map[string]*productCols, error) {
	rows, err := conn.QueryContext(ctx, productsQuery)
	if err != nil {
		return nil, fmt.Errorf("query products: %w", err)
	}
	defer rows.Close()
	out := map[string]*productCols{}
	strs := map[string]string{}
	str := func(b []byte) string {
		if s, ok := strs[string(b)]; ok {
			return s
		}
		s := string(b)
		strs[s] = s
		return s
	}
	var raw [6]sql.RawBytes
	for rows.Next() {
		if err := rows.Scan(&raw[0], &raw[1], &raw[2], &raw[3], &raw[4], &raw[5]); err != nil {
			return nil, fmt.Errorf("scan products: %w", err)
		}
		p := &productCols{code: string(raw[0]), line: str(raw[1]), scale: str(raw[2])}
		q, err := atoi(raw[3])
		if err != nil {
			return nil, fmt.Errorf("product %s quantityInStock: %w", p.code, err)
		}
		p.qty = int32(q)
		if p.buy, err = mysqldb.ParseDecimal2(string(raw[4])); err != nil {
			return nil, fmt.Errorf("product %s buyPrice: %w", p.code, err)
		}
		if p.msrp, err = mysqldb.ParseDecimal2(string(raw[5])); err != nil {
			return nil, fmt.Errorf("product %s MSRP: %w", p.code, err)
		}
		out[p.code] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read products: %w", err)
	}
	return out, nil
}
