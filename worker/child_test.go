package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/checkpoint"
	"github.com/recstream/recstream/internal/icetable"
	"github.com/recstream/recstream/internal/stacktest"
)

// childEnv carries a child worker's instructions from the test process (re-exec helper).
const childEnv = "RECSTREAM_WORKER_TEST_CHILD"

type childSpec struct {
	Env testEnv
	ID  string
	// KillAtCheckpoint > 0: SIGKILL itself after the uploads (or commit) of its k-th flush,
	// before the checkpoint that covers it. Counted in flushes, not checkpoint calls: commits
	// of a table that land together are checkpointed once, so a round's data may make fewer
	// checkpoints than k.
	KillAtCheckpoint int
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(childMain(spec))
	}
	os.Exit(m.Run())
}

// childMain runs one worker process until SIGTERM: exit 0 after a clean drain, 1 otherwise.
func childMain(spec string) int {
	var c childSpec
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Fprintln(os.Stderr, "child spec:", err)
		return 2
	}
	// Handle SIGTERM before anything else, then say so: startChild waits for that line, so a
	// test's SIGTERM never meets the default action (death by signal) of a process still
	// starting (a race-instrumented binary takes a while to get here).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	fmt.Fprintln(os.Stderr, childReady)
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	log, _ := cfg.Build()
	RouteLogrus(log)
	if err := c.Env.connect(); err != nil {
		log.Error("connect", zap.Error(err))
		return 1
	}
	w, err := c.Env.build(c.ID, log, nil)
	if err != nil {
		log.Error("build", zap.Error(err))
		return 1
	}
	if c.KillAtCheckpoint > 0 {
		var n atomic.Int64
		w.beforeCheckpoint = func(flushes int) {
			if n.Add(int64(flushes)) >= int64(c.KillAtCheckpoint) {
				log.Warn("test: killing myself between upload and checkpoint")
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				time.Sleep(time.Minute)
			}
		}
	}
	if err := w.Run(ctx); err != nil {
		log.Error("run", zap.Error(err))
		return 1
	}
	return 0
}

// childReady is the line a child writes once SIGTERM is handled.
const childReady = "test child: SIGTERM handled"

// startChild starts a worker process and returns once it handles SIGTERM; its log goes to a file kept in the test's temp dir.
func startChild(t testing.TB, e *testEnv, id string, killAt int) *exec.Cmd {
	t.Helper()
	spec, err := json.Marshal(childSpec{Env: *e, ID: id, KillAtCheckpoint: killAt})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	logf, err := os.Create(filepath.Join(t.TempDir(), id+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr, cmd.Stdout = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stacktest.Eventually(t, 60*time.Second, 20*time.Millisecond, func() bool {
		b, _ := os.ReadFile(logf.Name())
		return bytes.Contains(b, []byte(childReady))
	}, "child %s never got ready to handle SIGTERM", id)
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("child %s log tail:\n%s", id, b)
		}
	})
	return cmd
}

// waitExit waits for cmd to end within d.
func waitExit(t testing.TB, cmd *exec.Cmd, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("child did not exit within %s", d)
		return nil
	}
}

func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// TestKillNineExactlyOnce kills the worker with SIGKILL seven times, three of them between an
// upload and its checkpoint, once while a second worker overlaps it, restarting it each time:
// every record is still written once.
func TestKillNineExactlyOnce(t *testing.T) {
	e := newTestEnv(t, 2)
	_ = killNineRounds(t, e)
}

// TestKillNineExactlyOnceIceberg is TestKillNineExactlyOnce with the output committed to an
// Iceberg table: three of the kills fall between a commit and its checkpoint, so the next
// owner must find in the table's snapshot summaries what it already holds. Read back by
// icespec (the spec's metadata → manifest list → manifests, not iceberg-go), before and after
// compact.
func TestKillNineExactlyOnceIceberg(t *testing.T) {
	e := newTestEnv(t, 2)
	e.useIceberg(t)
	n := killNineRounds(t, e)

	// And after compact (every hour closed: the clock is pushed past them).
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	before := e.read(t).objects
	rep, err := icetable.Compact(ctx, e.Ice.Catalog(t), e.Ice.Config.Ident(), icetable.CompactOptions{Now: time.Now().Add(3 * time.Hour), TargetBytes: 128 << 20, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	after := e.read(t)
	if rep.FilesIn == 0 || after.objects >= before {
		t.Fatalf("compact %+v: %d data files before, %d after: want fewer", rep, before, after.objects)
	}
	if err := exactlyOnce(after, "k", n); err != nil {
		t.Fatalf("after compact: %v", err)
	}
}

// killNineRounds runs the rounds and checks the output; it returns how many events it put.
func killNineRounds(t *testing.T, e *testEnv) int {
	e.Cfg.Flush.MaxRecords = 15
	const perRound, rounds = 80, 6
	next := 0
	for round := 0; round < rounds; round++ {
		batch := make([][]byte, perRound)
		for i := range batch {
			batch[i] = event(next, "k")
			next++
		}
		e.put(t, batch)
		id := fmt.Sprintf("k%d", round)
		if round%2 == 0 {
			cmd := startChild(t, e, id, 1+rand.IntN(3))
			if err := waitExit(t, cmd, 90*time.Second); !killedBySIGKILL(err) {
				t.Fatalf("round %d: child ended with %v, want SIGKILL between upload and checkpoint", round, err)
			}
			continue
		}
		cmd := startChild(t, e, id, 0)
		var overlap *exec.Cmd
		if round == 3 {
			// A second worker overlaps the first: they share (and take from each other) the
			// shards until both are killed, at different random moments.
			overlap = startChild(t, e, id+"b", 0)
		}
		// Kill once the child is doing something: leases taken after failover, then a random moment.
		time.Sleep(e.Cfg.FailoverTime + time.Duration(500+rand.IntN(2500))*time.Millisecond)
		_ = cmd.Process.Kill()
		if err := waitExit(t, cmd, 30*time.Second); !killedBySIGKILL(err) {
			t.Fatalf("round %d: child ended with %v, want SIGKILL", round, err)
		}
		if overlap != nil {
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Millisecond)
			_ = overlap.Process.Kill()
			if err := waitExit(t, overlap, 30*time.Second); !killedBySIGKILL(err) {
				t.Fatalf("round %d: overlapping child ended with %v, want SIGKILL", round, err)
			}
		}
	}
	cmd := startChild(t, e, "final", 0)
	e.waitExactlyOnce(t, "k", next, 120*time.Second)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := waitExit(t, cmd, 30*time.Second); err != nil {
		t.Fatalf("final worker: %v", err)
	}
	final := e.read(t)
	if err := exactlyOnce(final, "k", next); err != nil {
		t.Fatal(err)
	}
	return next
}

// TestSIGTERMDrains: on SIGTERM the worker stops taking records, exits within
// shutdown_timeout and releases its leases. Records of a window the stream has not proven
// complete are not flushed (that would cut an object where a replay would not): they stay
// behind the checkpoint and the next owner writes each of them exactly once.
func TestSIGTERMDrains(t *testing.T) {
	e := newTestEnv(t, 2)
	e.Cfg.Flush = FlushConfig{MaxRecords: 100000, MaxBytes: 1 << 30, MaxAge: 15 * time.Second, WindowGrace: time.Second}
	waitEarlyInWindow(t, e.Cfg.Flush.MaxAge, 12*time.Second)
	const n = 200
	batch := make([][]byte, n)
	for i := range batch {
		batch[i] = event(i, "d")
	}
	e.put(t, batch)
	cmd := startChild(t, e, "d1", 0)
	store, err := checkpoint.New(checkpoint.Config{Table: e.DynamoDB.LeaseTable, WorkerID: "observer", FailoverTime: e.Cfg.FailoverTime}, e.db)
	if err != nil {
		t.Fatal(err)
	}
	leases := func() []checkpoint.Lease {
		ls, err := store.ListLeases(context.Background())
		if err != nil {
			return nil
		}
		return ls
	}
	stacktest.Eventually(t, 60*time.Second, 250*time.Millisecond, func() bool {
		held := 0
		for _, l := range leases() {
			if l.Owner == "d1" {
				held++
			}
		}
		return held == 2
	}, "child never leased both shards")
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := waitExit(t, cmd, e.Cfg.ShutdownTimeout+5*time.Second); err != nil {
		t.Fatalf("worker exit: %v", err)
	}
	if d := time.Since(start); d > e.Cfg.ShutdownTimeout {
		t.Fatalf("drain took %s, bound %s", d, e.Cfg.ShutdownTimeout)
	}
	if o := e.read(t); len(o.count) != 0 {
		t.Fatalf("%d records of an unfinished window written at SIGTERM", len(o.count))
	}
	for _, l := range leases() {
		if l.Owner != "" {
			t.Fatalf("lease %s after drain: owner %q, want released", l.ShardID, l.Owner)
		}
	}
	// The next owner takes over at once (released leases) and writes everything once.
	cmd = startChild(t, e, "d2", 0)
	e.waitExactlyOnce(t, "d", n, 60*time.Second)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := waitExit(t, cmd, e.Cfg.ShutdownTimeout+5*time.Second); err != nil {
		t.Fatalf("second worker exit: %v", err)
	}
	for _, l := range leases() {
		if l.Owner != "" || l.Checkpoint == "" {
			t.Fatalf("lease %s after the second drain: owner %q checkpoint %q, want released and checkpointed", l.ShardID, l.Owner, l.Checkpoint)
		}
	}
}
