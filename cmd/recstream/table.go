package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/recstream/recstream/internal/icetable"
)

// warehouseOf is the Iceberg warehouse location: the configured one, or warehouse/ under the
// recommendations location (beside errors/).
func warehouseOf(app *App, ic icetable.Config) string {
	if ic.Warehouse != "" {
		return strings.TrimSuffix(ic.Warehouse, "/")
	}
	return strings.TrimSuffix(app.Config.S3.Buckets.Recommendations, "/") + "/warehouse"
}

// openTable opens the catalog and the output table (created when missing) and returns its
// committer; reg (optional) receives the commit histogram. The returned func closes the
// catalog's connections.
func openTable(ctx context.Context, app *App, client *s3.Client, ic icetable.Config, reg prometheus.Registerer) (*icetable.Committer, func() error, error) {
	wh := warehouseOf(app, ic)
	u, err := url.Parse(wh)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, nil, usageError{fmt.Sprintf("worker.output.iceberg.warehouse: want s3://bucket[/prefix], got %q", wh)}
	}
	icetable.RegisterBucket(u.Host, client)
	pgc := app.Config.Postgres
	cat, closeCat, err := icetable.Catalog(ctx, ic, pgc.DSN, pgc.Password, wh)
	if err != nil {
		return nil, nil, err
	}
	c, err := icetable.NewCommitter(ctx, cat, ic, wh, app.Log)
	if err != nil {
		closeCat()
		return nil, nil, err
	}
	if reg != nil {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "recstream_worker_table_commit_seconds",
			Help:    "Iceberg commit attempts by outcome (ok, conflict: another writer committed first, error: unknown outcome, retried).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"outcome"})
		if err := reg.Register(h); err != nil {
			closeCat()
			return nil, nil, err
		}
		c.Observe = func(outcome string, d time.Duration) { h.WithLabelValues(outcome).Observe(d.Seconds()) }
	}
	return c, closeCat, nil
}
