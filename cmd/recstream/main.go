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
	"sort"
	"strings"
	"sync"
	"syscall"

	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/config"
	"github.com/recstream/recstream/internal/logging"
)

// Exit codes. Cron and ECS act on them, so they are part of the interface (see README).
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

var commands = map[string]command{}

// register is called from each command file's init.
func register(c command) { commands[c.name] = c }

// App is what every subcommand receives: the decoded config and the root logger.
type App struct {
	Config Config
	Log    *zap.Logger
	Stdout io.Writer
	Stderr io.Writer

	checkArgs bool // --check-args: parseFlags stops the command after a successful parse
}

// errArgsChecked is returned by parseFlags under --check-args once the flags parsed.
var errArgsChecked = errors.New("arguments checked")

var (
	checkMu       sync.Mutex
	checkOnlySets = map[*flag.FlagSet]bool{}
)

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
	global := flag.NewFlagSet("recstream", flag.ContinueOnError)
	global.SetOutput(stderr)
	cfgPath := global.String("config", "config.yaml", "path to the config file")
	logFormat := global.String("log-format", "", "json or console (default: config log.format)")
	checkArgs := global.Bool("check-args", false, "only check the config and the command's flags, then exit (used to validate deployment files)")
	global.Usage = func() { usage(stderr, global) }
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	rest := global.Args()
	cmd, cmdArgs, ok := lookup(rest)
	if !ok {
		if len(rest) == 0 {
			usage(stderr, global)
		} else {
			fmt.Fprintf(stderr, "recstream: unknown command %q\n", strings.Join(rest, " "))
			usage(stderr, global)
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
	awsenv.SetOpLogTag(cmd.name)

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

// lookup finds the longest registered command name that prefixes args ("batch etl" before "batch").
func lookup(args []string) (command, []string, bool) {
	for n := min(2, len(args)); n >= 1; n-- {
		if c, ok := commands[strings.Join(args[:n], " ")]; ok {
			return c, args[n:], true
		}
	}
	return command{}, nil, false
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: recstream [--config config.yaml] [--log-format json|console] <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-18s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nglobal flags:")
	fs.PrintDefaults()
	fmt.Fprintln(w, "\nRun `recstream <command> -h` for a command's flags.")
}

// newFlagSet returns a flag set for a subcommand that reports errors instead of exiting.
func newFlagSet(app *App, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("recstream "+name, flag.ContinueOnError)
	fs.SetOutput(app.Stderr)
	if app.checkArgs {
		checkMu.Lock()
		checkOnlySets[fs] = true
		checkMu.Unlock()
	}
	return fs
}

// parseFlags parses args into fs, mapping mistakes to usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	checkMu.Lock()
	defer checkMu.Unlock()
	if checkOnlySets[fs] {
		delete(checkOnlySets, fs)
		return errArgsChecked
	}
	return nil
}
