package main

import (
	"context"
	"math"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/recstream/recstream/inference/train"
)

// TestTrainProgressCadence: with an injected clock and ticker, every tick logs one line with
// the latest figures, whether or not an epoch ended since (a long epoch, or the reading, still
// shows), and a stage's beginning and end log at once.
func TestTrainProgressCadence(t *testing.T) {
	if trainProgressInterval > 10*time.Second {
		t.Fatalf("progress interval %s: want a line at least every 10 s", trainProgressInterval)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	clock := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	p := newTrainProgress(zap.New(core), func() time.Time { return clock })
	tick := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(ctx, tick)
	}()
	// waitLines waits (with a deadline) until n lines have been logged.
	waitLines := func(n int) []observer.LoggedEntry {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for logs.Len() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d lines logged, want %d: %v", logs.Len(), n, logs.All())
			}
			time.Sleep(time.Millisecond)
		}
		if logs.Len() != n {
			t.Fatalf("%d lines logged, want %d: %v", logs.Len(), n, logs.All())
		}
		return logs.All()
	}
	fields := func(e observer.LoggedEntry) map[string]any { return e.ContextMap() }

	// Reading: a tick logs the count so far.
	p.read(40000)
	clock = clock.Add(10 * time.Second)
	tick <- clock
	got := waitLines(1)
	if f := fields(got[0]); got[0].Message != "reading dataset" || f["records"] != int64(40000) || f["stage"] != "read" || f["elapsed"] != 10*time.Second {
		t.Fatalf("reading line: %s %v", got[0].Message, f)
	}

	// A stage begins: one line at once.
	p.update(train.Progress{Phase: train.PhaseWarm, Stage: train.StageContent, Begin: true, Epochs: 400, StopRMSE: 1.1})
	got = waitLines(2)
	if f := fields(got[1]); got[1].Message != "stage started" || f["stage"] != "warm/content" || f["epoch"] != int64(0) {
		t.Fatalf("begin line: %s %v", got[1].Message, f)
	}
	// Epochs end without a line of their own; each tick logs the latest one.
	for e := 1; e <= 3; e++ {
		p.update(train.Progress{Phase: train.PhaseWarm, Stage: train.StageContent, Epoch: e, Epochs: 400, TrainLoss: 0.2 / float64(e), StopRMSE: 0.8, ETA: time.Minute})
	}
	if logs.Len() != 2 {
		t.Fatalf("epochs logged lines of their own: %v", logs.All())
	}
	clock = clock.Add(10 * time.Second)
	tick <- clock
	got = waitLines(3)
	f := fields(got[2])
	if got[2].Message != "training progress" || f["stage"] != "warm/content" || f["epoch"] != int64(3) || math.Abs(f["loss"].(float64)-0.2/3) > 1e-12 ||
		f["stop_rmse"] != 0.8 || f["elapsed"] != 20*time.Second || f["eta"] != time.Minute {
		t.Fatalf("progress line: %s %v", got[2].Message, f)
	}
	// No epoch ends between two ticks (one long epoch): the next tick logs all the same.
	clock = clock.Add(10 * time.Second)
	tick <- clock
	got = waitLines(4)
	if f := fields(got[3]); got[3].Message != "training progress" || f["epoch"] != int64(3) || f["elapsed"] != 30*time.Second {
		t.Fatalf("second progress line: %s %v", got[3].Message, f)
	}
	// The end of a stage, cut by the max duration, logs at once and says so.
	p.update(train.Progress{Phase: train.PhaseWarm, Stage: train.StageContent, Epoch: 4, Epochs: 400, Done: true, BestEpoch: 2, TimeLimited: true, StopRMSE: 0.8})
	got = waitLines(5)
	if f := fields(got[4]); got[4].Message != "stage done" || f["best_epoch"] != int64(2) || f["time_limited"] != true {
		t.Fatalf("done line: %s %v", got[4].Message, f)
	}
	// The personal stage has no stop RMSE: the field is left out rather than NaN.
	p.update(train.Progress{Phase: train.PhaseWarm, Stage: train.StagePersonal, Epoch: 1, Epochs: 400, TrainLoss: 0.1, StopRMSE: math.NaN()})
	tick <- clock
	got = waitLines(6)
	if f := fields(got[5]); f["stage"] != "warm/personal" || f["stop_rmse"] != nil {
		t.Fatalf("personal line: %v", f)
	}
	cancel()
	<-done
	if p.count() != 6 {
		t.Fatalf("count %d, want 6", p.count())
	}
}
