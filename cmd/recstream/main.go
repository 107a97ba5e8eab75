// Command recstream is the composition root: it parses flags and config.yaml, builds the
// dependencies and runs one subcommand (worker, batch seed|etl|embeddings, train, produce,
// status, migrate). Only this package reads files, flags or the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/config"
	"github.com/recstream/recstream/internal/logging"
)

// Exit codes. Cron and ECS act on them, so they are part of the interface (see docs/configuration.md).
const (
	exitOK      = 0
	exitFailure = 1 // the job ran and failed; a retry may succeed
	exitUsage   = 2 // bad flags or config: fix before retrying
	exitLocked  = 3 // another run holds the job's lock (batch etl)
)

// command is one subcommand. run parses its own flags from args.
type command struct {
	name    string // "batch etl"
	summary string
	run     func(ctx context.Context, app *App, args []string) error
}

// commands is the command table: every subcommand, in the order `recstream -h` lists them.
func commands() []command {
	return []command{
		{name: "batch seed", summary: "create the classicmodels source schema and load it (--from CSV dir or --scale N generated)", run: runBatchSeed},
		{name: "batch etl", summary: "export ratings ⋈ products ⋈ customers to Hive-partitioned Snappy Parquet (manifest publish; exit 3 if locked)", run: runBatchETL},
		{name: "train", summary: "train the two-tower model on the ETL's dataset and publish a new artifacts version", run: runTrain},
		{name: "batch embeddings", summary: "load item and user embeddings into PostgreSQL + pgvector (atomic swap; --rollback)", run: runBatchEmbeddings},
		{name: "migrate", summary: "apply the PostgreSQL schema migrations (pgvector tables)", run: runMigrate},
		{name: "worker", summary: "consume the user-activity stream and write exactly-once recommendations to S3 (long-running)", run: runWorker},
		{name: "replay", summary: "reprocess a time range of the stream, rewriting its output objects in place (e.g. after a bad model)", run: runReplay},
		{name: "compact", summary: "Iceberg output: bin-pack closed hours into ~128 MB files, expire old snapshots, delete orphan files (cron)", run: runCompact},
		{name: "produce", summary: "simulate the sales platform: write user-activity events to the stream", run: runProduce},
		{name: "status", summary: "show shard leases, checkpoints, lag and the live model/embeddings versions", run: runStatus},
		{name: "inspect", summary: "summarise the worker's output: objects, records, errors, sample recommendations", run: runInspect},
	}
}

// App is what every subcommand receives: the decoded config and the root logger.
type App struct {
	Config Config
	Log    *zap.Logger
	Stdout io.Writer
	Stderr io.Writer

	checkArgs bool // --check-args: a command stops after its flags parsed (see flagSet)
}

// errArgsChecked is returned by flagSet.parse under --check-args once the flags parsed.
var errArgsChecked = errors.New("arguments checked")

// usageError marks a flag or argument mistake (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitCodeError carries a specific exit code out of a command.
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string { return e.err.Error() }
func (e exitCodeError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without os.Exit, so tests can call it.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	return runCommands(ctx, commands(), args, env, stdout, stderr)
}

// runCommands runs the command of table that args name.
func runCommands(ctx context.Context, table []command, args, env []string, stdout, stderr io.Writer) int {
	global := flag.NewFlagSet("recstream", flag.ContinueOnError)
	global.SetOutput(stderr)
	cfgPath := global.String("config", "config.yaml", "path to the config file")
	logFormat := global.String("log-format", "", "json or console (default: config log.format)")
	checkArgs := global.Bool("check-args", false, "only check the config and the command's flags, then exit (used to validate deployment files)")
	global.Usage = func() { usage(stderr, global, table) }
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	rest := global.Args()
	cmd, cmdArgs, ok := lookup(table, rest)
	if !ok {
		if len(rest) == 0 {
			usage(stderr, global, table)
		} else {
			fmt.Fprintf(stderr, "recstream: unknown command %q\n", strings.Join(rest, " "))
			usage(stderr, global, table)
		}
		return exitUsage
	}

	cfg := DefaultConfig()
	if err := config.LoadFile(*cfgPath, &cfg, env); err != nil {
		fmt.Fprintf(stderr, "recstream: config %s: %v\n", *cfgPath, err)
		return exitUsage
	}
	if *logFormat != "" {
		cfg.Log.Format = *logFormat
	}
	log, err := logging.New(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "recstream: %v\n", err)
		return exitUsage
	}
	defer func() { _ = log.Sync() }()
	app := &App{Config: cfg, Log: log, Stdout: stdout, Stderr: stderr, checkArgs: *checkArgs}
	setOpLogTag(app, cmd.name)

	err = cmd.run(ctx, app, cmdArgs)
	var ue usageError
	var ce exitCodeError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp), errors.Is(err, errArgsChecked):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "recstream %s: %v\n", cmd.name, err)
		return exitUsage
	case errors.As(err, &ce):
		log.Error("command failed", zap.String("command", cmd.name), zap.Error(ce.err))
		return ce.code
	default:
		log.Error("command failed", zap.String("command", cmd.name), zap.Error(err))
		return exitFailure
	}
}

// lookup finds the longest command name in table that prefixes args ("batch etl" before "batch").
func lookup(table []command, args []string) (command, []string, bool) {
	for n := min(2, len(args)); n >= 1; n-- {
		name := strings.Join(args[:n], " ")
		for _, c := range table {
			if c.name == name {
				return c, args[n:], true
			}
		}
	}
	return command{}, nil, false
}

func usage(w io.Writer, fs *flag.FlagSet, table []command) {
	fmt.Fprintln(w, "usage: recstream [--config config.yaml] [--log-format json|console] <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range table {
		fmt.Fprintf(w, "  %-18s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nglobal flags:")
	fs.PrintDefaults()
	fmt.Fprintln(w, "\nRun `recstream <command> -h` for a command's flags.")
}

// flagSet is a subcommand's flag set. It reports errors instead of exiting, and under
// --check-args parse stops the command once its flags parsed.
type flagSet struct {
	*flag.FlagSet
	checkOnly bool
}

// newFlagSet returns the flag set of subcommand name.
func newFlagSet(app *App, name string) *flagSet {
	fs := flag.NewFlagSet("recstream "+name, flag.ContinueOnError)
	fs.SetOutput(app.Stderr)
	return &flagSet{FlagSet: fs, checkOnly: app.checkArgs}
}

// parse parses args, mapping mistakes to usage errors; under --check-args it returns
// errArgsChecked after a successful parse.
func (fs *flagSet) parse(args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	if fs.checkOnly {
		return errArgsChecked
	}
	return nil
}
