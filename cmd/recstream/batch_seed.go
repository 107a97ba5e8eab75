package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"

	"go.uber.org/zap"

	"github.com/recstream/recstream/batch/seed"
	"github.com/recstream/recstream/internal/mysqldb"
)

func runBatchSeed(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "batch seed")
	from := fs.String("from", "", "folder of classicmodels CSVs (customers.csv, …, ratings.csv) in the classicmodels CSV format (testdata/README.md)")
	scale := fs.Int("scale", 0, "generate N customers (deterministic; see --seed, --ratings-per-customer)")
	perCustomer := fs.Int("ratings-per-customer", 100, "average bought-and-rated products per generated customer")
	genSeed := fs.Int64("seed", app.Config.Batch.Seed, "generator seed (default: config batch.seed)")
	replace := fs.Bool("replace", false, "drop the classicmodels tables and reload them")
	if err := fs.parse(args); err != nil {
		return err
	}
	if (*from == "") == (*scale == 0) {
		return usageError{"give exactly one of --from DIR or --scale N"}
	}
	var gen *seed.Generator
	if *scale != 0 {
		g, err := seed.NewGenerator(*genSeed, *scale, *perCustomer)
		if err != nil {
			return usageError{err.Error()}
		}
		gen = g
	} else if st, err := os.Stat(*from); err != nil || !st.IsDir() {
		return usageError{fmt.Sprintf("--from %s: not a directory", *from)}
	}

	if err := mysqldb.EnsureDatabase(ctx, app.Config.MySQL); err != nil {
		return err
	}
	db, err := mysqldb.Open(app.Config.MySQL)
	if err != nil {
		return err
	}
	defer db.Close()
	seeder, err := seed.NewSeeder(db, app.Config.Batch.SeedConfig(), app.Log)
	if err != nil {
		return err
	}
	if err := seeder.CreateSchema(ctx, *replace); err != nil {
		if errors.Is(err, seed.ErrAlreadySeeded) {
			return usageError{err.Error()}
		}
		return err
	}
	var st seed.Stats
	if gen != nil {
		var progress func(int64)
		if bar := progressBar(app, int64(gen.NumCustomers())*int64(*perCustomer), "seeding ratings", "rows"); bar != nil {
			progress = func(n int64) { _ = bar.Set64(n) }
			defer bar.Finish() //nolint:errcheck
		}
		st, err = seeder.LoadGenerated(ctx, gen, progress)
	} else {
		st, err = seeder.LoadCSVDir(ctx, *from)
	}
	if err != nil {
		return err
	}
	fields := []zap.Field{zap.Int64("records", st.Total()), zap.Duration("duration", st.Duration)}
	tables := make([]string, 0, len(st.Rows))
	for t := range st.Rows {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	for _, t := range tables {
		fields = append(fields, zap.Int64("rows_"+t, st.Rows[t]))
	}
	app.Log.Info("seeded source database", fields...)
	return nil
}
