package etl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/recstream/recstream/batch/dataset"
)

// Plan is what `batch etl --dry-run` prints: what a run would read, write and replace.
type Plan struct {
	Location     string // dataset URL
	RunID        string
	Shard        int
	Shards       int
	Lock         string
	LockHolder   string   // "" when the lock is free
	Queries      []string // products (into memory), ratings and customers (streamed, merge-joined)
	SourceRows   int64
	Customers    int64 // partitions the run would write (customers with ratings in the shard)
	Published    *dataset.Manifest
	RowGroupRows int
}

// Plan inspects the source and the datalake without writing or locking anything.
func (j *Job) Plan(ctx context.Context) (Plan, error) {
	p := Plan{Location: j.store.URL(dataset.Prefix), RunID: j.opts.RunID, Shard: j.opts.Shard, Shards: j.opts.Shards, Queries: j.sourceQueries(), RowGroupRows: j.cfg.RowGroupRows}
	conn, err := j.db.Conn(ctx)
	if err != nil {
		return p, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if p.Lock, _, err = j.lockNames(ctx, conn); err != nil {
		return p, err
	}
	var free int
	if err := conn.QueryRowContext(ctx, "SELECT IS_FREE_LOCK(?)", p.Lock).Scan(&free); err != nil {
		return p, fmt.Errorf("check lock: %w", err)
	}
	if free != 1 {
		p.LockHolder = describeHolder(ctx, conn, j.store, p.Lock)
	}
	if p.SourceRows, err = j.CountSourceRows(ctx); err != nil {
		return p, err
	}
	cq := "SELECT COUNT(DISTINCT r.customerNumber) FROM ratings r"
	var args []any
	if j.sharded() {
		cq += " WHERE CRC32(r.customerNumber) % ? = ?"
		args = append(args, j.opts.Shards, j.opts.Shard)
	}
	if err := conn.QueryRowContext(ctx, cq, args...).Scan(&p.Customers); err != nil {
		return p, fmt.Errorf("count customers: %w", err)
	}
	m, err := dataset.ReadManifest(ctx, j.store)
	if err != nil && !errors.Is(err, dataset.ErrNoDataset) {
		return p, err
	}
	p.Published = m
	return p, nil
}

// Write prints the plan for a human.
func (p Plan) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "batch etl plan (dry run: nothing is written)\n")
	fmt.Fprintf(&b, "  destination:   %s/%s=<N>/part-%s_s%dof%d_<seq>.snappy.parquet\n", p.Location, dataset.PartitionColumn, p.RunID, p.Shard, p.Shards)
	fmt.Fprintf(&b, "  run id:        %s (shard %d of %d)\n", p.RunID, p.Shard, p.Shards)
	if p.LockHolder == "" {
		fmt.Fprintf(&b, "  lock:          %s (free)\n", p.Lock)
	} else {
		fmt.Fprintf(&b, "  lock:          %s HELD by %s: a run now would exit with code 3\n", p.Lock, p.LockHolder)
	}
	fmt.Fprintf(&b, "  source rows:   %d ratings over %d customers → %d partitions (at most %d rows per file)\n", p.SourceRows, p.Customers, p.Customers, p.RowGroupRows)
	if p.Published == nil {
		fmt.Fprintf(&b, "  published:     nothing yet; this run publishes the first manifest\n")
	} else {
		fmt.Fprintf(&b, "  published:     run %s, %d partitions, %d rows; the run replaces the whole dataset with the current join (partitions of customers without ratings now are removed)\n", p.Published.RunID, len(p.Published.Partitions), p.Published.Rows)
	}
	if p.Shards > 1 {
		fmt.Fprintf(&b, "  publish:       when all %d shards of run %s have finished\n", p.Shards, p.RunID)
	}
	fmt.Fprintf(&b, "  queries (ratings ⋈ customers merge-joined in order, products from memory):\n")
	for _, q := range p.Queries {
		fmt.Fprintf(&b, "    %s\n", q)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
