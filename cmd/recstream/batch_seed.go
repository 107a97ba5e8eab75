package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/recstream/recstream/batch/seed"
	"github.com/recstream/recstream/internal/mysqldb"
)

func init() {
	register(command{name: "batch seed", summary: "create the classicmodels source schema and load it (--from CSV dir or --scale N generated)", run: runBatchSeed})
}

func runBatchSeed(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "batch seed")
	from := fs.String("from", "", "folder of classicmodels CSVs (customers.csv, …, ratings.csv) in the classicmodels CSV format (testdata/README.md)")
	scale := fs.Int("scale", 0, "generate N customers (deterministic; see --seed, --ratings-per-customer)")
	perCustomer := fs.Int("ratings-per-customer", 100, "average bought-and-rated products per generated customer")
	genSeed := fs.Int64("seed", app.Config.Batch.Seed, "generator seed (default: config batch.seed)")
	replace := fs.Bool("replace", false, "drop the classicmodels tables and reload them")
	if err := parseFlags(fs, args); err != nil {
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
		if bar := progressBar(app, int64(gen.NumCustomers())*int64(*perCustomer), "seeding ratings"); bar != nil {
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

// progressBar returns a bar on app.Stderr when it is a terminal, else nil (cron, logs, CI).
func progressBar(app *App, total int64, what string) *progressbar.ProgressBar {
	f, ok := app.Stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(io.Writer(f)),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("rows"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}
