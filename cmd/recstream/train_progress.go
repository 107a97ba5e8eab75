package main

import (
	"context"
	"math"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/inference/train"
)

// trainProgressInterval is how often `recstream train` logs its progress between stage
// lines: cron and ECS read the logs, and the terminal bar draws only on a terminal. Under 10 s
// so that a tick delayed by the scheduler still keeps the gap between lines under 10 s.
const trainProgressInterval = 9 * time.Second

// trainProgress turns the reading's and the trainer's progress into log lines: one when a
// stage begins, one when it ends, and at every tick of run a heartbeat with the latest
// figures (stage, epoch, loss, stop RMSE, elapsed, ETA), so a line comes at least once per
// tick whatever the stage. Its methods are safe for concurrent use.
type trainProgress struct {
	log   *zap.Logger
	now   func() time.Time
	start time.Time

	mu    sync.Mutex
	stage string // "read" while the dataset is read, then the trainer's phase/stage
	rows  int    // ratings read so far
	cur   train.Progress
	lines int
}

func newTrainProgress(log *zap.Logger, now func() time.Time) *trainProgress {
	return &trainProgress{log: log.With(zap.String("component", "train")), now: now, start: now(), stage: "read"}
}

// run logs a heartbeat at every tick until ctx ends.
func (p *trainProgress) run(ctx context.Context, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			p.heartbeat()
		}
	}
}

// read records that n ratings have been read.
func (p *trainProgress) read(n int) {
	p.mu.Lock()
	p.rows = n
	p.mu.Unlock()
}

// update records the trainer's progress and logs a stage's beginning and end.
func (p *trainProgress) update(pr train.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stage, p.cur = pr.Phase+"/"+pr.Stage, pr
	switch {
	case pr.Begin:
		p.logLocked("stage started")
	case pr.Done:
		fields := []zap.Field{zap.Int("best_epoch", pr.BestEpoch)}
		if pr.Stage == train.StageContent && !math.IsNaN(pr.BestRMSE) && !math.IsInf(pr.BestRMSE, 0) {
			fields = append(fields, zap.Float64("best_stop_rmse", pr.BestRMSE))
		}
		if pr.TimeLimited {
			fields = append(fields, zap.Bool("time_limited", true))
		}
		p.logLocked("stage done", fields...)
	}
}

func (p *trainProgress) heartbeat() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stage == "read" {
		p.lines++
		p.log.Info("reading dataset", zap.String("stage", p.stage), zap.Int("records", p.rows), zap.Duration("elapsed", p.now().Sub(p.start)))
		return
	}
	p.logLocked("training progress")
}

// logLocked logs msg with the latest figures; p.mu is held.
func (p *trainProgress) logLocked(msg string, extra ...zap.Field) {
	c := p.cur
	fields := []zap.Field{zap.String("stage", p.stage), zap.Int("epoch", c.Epoch), zap.Int("max_epochs", c.Epochs),
		zap.Duration("elapsed", p.now().Sub(p.start)), zap.Duration("eta", c.ETA)}
	if c.Epoch > 0 {
		fields = append(fields, zap.Float64("loss", c.TrainLoss))
	}
	if !math.IsNaN(c.StopRMSE) && !math.IsInf(c.StopRMSE, 0) && c.Stage == train.StageContent {
		fields = append(fields, zap.Float64("stop_rmse", c.StopRMSE))
	}
	p.lines++
	p.log.Info(msg, append(fields, extra...)...)
}

// count is the number of lines logged.
func (p *trainProgress) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lines
}
