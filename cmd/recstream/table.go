package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/apache/iceberg-go/catalog"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/icetable"
	"github.com/recstream/recstream/internal/icetable/icespec"
	"github.com/recstream/recstream/worker"
)

// warehouseOf is the Iceberg warehouse location: the configured one, or warehouse/ under the
// recommendations location (beside errors/).
func warehouseOf(app *App, ic icetable.Config) string {
	if ic.Warehouse != "" {
		return strings.TrimSuffix(ic.Warehouse, "/")
	}
	return strings.TrimSuffix(app.Config.S3.Buckets.Recommendations, "/") + "/warehouse"
}

// tableCommands are the subcommands whose AWS calls differ with the Iceberg output: recorded
// as "<name>+iceberg" when worker.output.table is iceberg, so the IAM check (deploy/iam_test.go)
// holds them to the Iceberg policy documents as well as the command's own.
var tableCommands = map[string]bool{"worker": true, "replay": true, "inspect": true}

// setOpLogTag names the subcommand in the AWS operation log (RECSTREAM_AWS_OPLOG, tests only)
// and, with the Iceberg output, marks operations on the warehouse's objects "@warehouse".
func setOpLogTag(app *App, name string) {
	iceberg := app.Config.Worker.Output.Table == "iceberg"
	if iceberg && tableCommands[name] {
		name += "+iceberg"
	}
	awsenv.SetOpLogTag(name)
	if !iceberg && name != "compact" {
		return
	}
	u, err := url.Parse(warehouseOf(app, app.Config.Worker.Output.Iceberg))
	if err != nil || u.Scheme != "s3" {
		return
	}
	prefix := strings.Trim(u.Path, "/") + "/"
	if prefix == "/" {
		prefix = ""
	}
	awsenv.SetOpLogS3Class(func(bucket, key string) string {
		if bucket == u.Host && strings.HasPrefix(key, prefix) {
			return "warehouse"
		}
		return ""
	})
}

// openCatalog opens the output table's catalog, with the warehouse's bucket readable and
// writable through client, and returns the warehouse location. The returned func closes the
// catalog's connections.
func openCatalog(ctx context.Context, app *App, client *s3.Client) (catalog.Catalog, string, func() error, error) {
	ic := app.Config.Worker.Output.Iceberg
	wh := warehouseOf(app, ic)
	u, err := url.Parse(wh)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, "", nil, usageError{fmt.Sprintf("worker.output.iceberg.warehouse: want s3://bucket[/prefix], got %q", wh)}
	}
	icetable.RegisterBucket(u.Host, client)
	pgc := app.Config.Postgres
	cat, closeCat, err := icetable.Catalog(ctx, ic, pgc.DSN, pgc.Password, wh)
	if err != nil {
		return nil, "", nil, err
	}
	return cat, wh, closeCat, nil
}

// openTable opens the catalog and the output table (created when missing) and returns its
// committer; reg (optional) receives the commit histogram. The returned func closes the
// catalog's connections.
func openTable(ctx context.Context, app *App, client *s3.Client, ic icetable.Config, reg prometheus.Registerer) (*icetable.Committer, func() error, error) {
	cat, wh, closeCat, err := openCatalog(ctx, app, client)
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

// tableFiles is the output table's live data files at its current snapshot, for inspect.
type tableFiles struct {
	location string
	files    []string
	read     func(ctx context.Context, location string) ([]worker.OutputRecord, error)
}

// liveTableFiles finds the output table's current metadata through the catalog, then reads
// it as the specification lays it out (icespec: manifest list → manifests), so what inspect
// counts does not depend on iceberg-go's scan planning.
func liveTableFiles(ctx context.Context, app *App) (*tableFiles, error) {
	ic := app.Config.Worker.Output.Iceberg
	client, err := awsenv.S3(ctx, app.Config.S3)
	if err != nil {
		return nil, err
	}
	cat, _, closeCat, err := openCatalog(ctx, app, client)
	if err != nil {
		return nil, err
	}
	defer closeCat()
	tbl, err := cat.LoadTable(ctx, ic.Ident())
	if err != nil {
		return nil, fmt.Errorf("load iceberg table %s.%s: %w", ic.Namespace, ic.Name, err)
	}
	readAll := func(ctx context.Context, location string) ([]byte, error) {
		u, err := url.Parse(location)
		if err != nil || u.Scheme != "s3" {
			return nil, fmt.Errorf("read %q: not an s3:// location", location)
		}
		key := strings.TrimPrefix(u.Path, "/")
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &u.Host, Key: &key})
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", location, err)
		}
		defer out.Body.Close()
		return io.ReadAll(out.Body)
	}
	b, err := readAll(ctx, tbl.MetadataLocation())
	if err != nil {
		return nil, err
	}
	m, err := icespec.ParseMetadata(b)
	if err != nil {
		return nil, err
	}
	live, err := icespec.LiveFiles(func(loc string) ([]byte, error) { return readAll(ctx, loc) }, m)
	if err != nil {
		return nil, err
	}
	tf := &tableFiles{location: tbl.Location()}
	for _, f := range live {
		tf.files = append(tf.files, f.Path)
	}
	tf.read = func(ctx context.Context, location string) ([]worker.OutputRecord, error) {
		b, err := readAll(ctx, location)
		if err != nil {
			return nil, err
		}
		rows, err := parquet.Read[worker.TableRecord](bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", location, err)
		}
		out := make([]worker.OutputRecord, len(rows))
		for i := range rows {
			out[i] = worker.OutputRecord(rows[i])
		}
		return out, nil
	}
	return tf, nil
}
