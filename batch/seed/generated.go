package seed

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/mysqldb"
)

// LoadGenerated loads g's data into the tables CreateSchema made. Foreign-key checks are off
// for the session (the generator is consistent by construction) so the tables can be filled in
// one pass over the customers. The secondary and foreign keys of the tables that grow with the
// customers are dropped first and built once the rows are in (deferkeys.go), so the load's cost
// stays linear in the rows; the schema ends as the DDL declares it. If the load fails, the
// tables hold part of the data and may lack those keys: rerun with replace (CreateSchema drops
// and recreates them). It logs a progress line every progressInterval; progress, if not nil,
// is called with the number of ratings loaded so far.
func (s *Seeder) LoadGenerated(ctx context.Context, g *Generator, progress func(ratings int64)) (st Stats, err error) {
	start := time.Now()
	st = Stats{Rows: map[string]int64{}}
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

	deferred, err := deferKeys(ctx, conn)
	if err != nil {
		return st, err
	}
	defer func() {
		if err != nil && len(deferred) > 0 {
			err = fmt.Errorf("%w (the tables are partly loaded and may lack their secondary keys: rerun with --replace)", err)
		}
	}()

	total := g.TotalRatings()
	pr := newLoadProgress(s.log, time.Now, total)
	tickCtx, stopTicks := context.WithCancel(ctx)
	ticker := time.NewTicker(s.progressEvery)
	defer ticker.Stop()
	var ticks sync.WaitGroup
	ticks.Add(1)
	go func() { defer ticks.Done(); pr.run(tickCtx, ticker.C) }()
	defer func() { stopTicks(); ticks.Wait() }()
	s.log.Info("seed started", zap.String("stage", "load"), zap.Int("customers", g.NumCustomers()),
		zap.Int64("ratings_total", total), zap.Strings("deferred_keys", tableNames(deferred)))

	ins := map[string]*inserter{}
	for _, spec := range tableSpecs {
		ins[spec.name] = newInserter(conn, spec.name, spec.cols, s.cfg.InsertBatchRows)
	}
	add := func(table string, vals ...any) error {
		st.Rows[table]++
		pr.rows.Add(1)
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
		if err := add("products", p.Code, p.Name, p.Line, p.Scale, p.Vendor, p.Description, p.QuantityInStock, mysqldb.FormatDecimal2(p.BuyPriceCents), mysqldb.FormatDecimal2(p.MSRPCents)); err != nil {
			return st, err
		}
	}
	err = g.Each(ctx, func(d CustomerData) error {
		c := d.Customer
		if err := add("customers", c.Number, c.Name, c.ContactLastName, c.ContactFirstName, c.Phone, c.AddressLine1, nullable(c.AddressLine2), c.City, nullable(c.State), nullable(c.PostalCode), c.Country, nullable(c.SalesRep), mysqldb.FormatDecimal2(c.CreditLimitCents)); err != nil {
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
				if err := add("orderdetails", o.Number, l.ProductCode, l.QuantityOrdered, mysqldb.FormatDecimal2(l.PriceEachCents), l.LineNumber); err != nil {
					return err
				}
			}
			if err := add("payments", o.CustomerNumber, o.CheckNumber, day(o.OrderDate.AddDate(0, 0, 3)), mysqldb.FormatDecimal2(min(total, mysqldb.MaxDecimal2))); err != nil {
				return err
			}
		}
		for _, r := range d.Ratings {
			if err := add("ratings", r.CustomerNumber, r.ProductCode, r.Rating); err != nil {
				return err
			}
		}
		pr.ratings.Store(st.Rows["ratings"])
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
	s.log.Info("seed rows inserted", zap.String("stage", "load"), zap.Int64("rows", st.Total()),
		zap.Int64("ratings", st.Rows["ratings"]), zap.Duration("duration", time.Since(start)))
	if err := restoreKeys(ctx, conn, deferred, s.log, pr.keys); err != nil {
		return st, err
	}
	st.Duration = time.Since(start)
	return st, nil
}

func tableNames(keys []tableKeys) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.table
	}
	return out
}

// TotalRatings is the number of ratings the generator makes (the sum of RatingCount).
func (g *Generator) TotalRatings() int64 {
	var n int64
	for i := 0; i < g.customers; i++ {
		n += int64(g.RatingCount(i))
	}
	return n
}

func nullable[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func day(t time.Time) string { return t.Format(time.DateOnly) }
