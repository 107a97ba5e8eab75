package seed

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// progressInterval is how often a generated load logs its progress: cron and ECS read the
// logs (the terminal bar draws only on a terminal). Under 10 s so that a tick the scheduler
// delays still keeps the gap between two lines under 10 s, as `recstream train` does.
const progressInterval = 9 * time.Second

// loadProgress logs a generated load's heartbeat: the ratings and rows inserted so far, the
// elapsed time and an ETA while rows are inserted (stage "load"), the table whose keys are
// being built and for how long afterwards (stage "keys"). Its methods are safe for concurrent
// use: the load goroutine counts, run's goroutine logs.
type loadProgress struct {
	log   *zap.Logger
	now   func() time.Time
	start time.Time
	total int64 // ratings the load will insert

	ratings atomic.Int64
	rows    atomic.Int64

	mu         sync.Mutex
	stage      string
	table      string
	stageStart time.Time
	loadTime   time.Duration
}

func newLoadProgress(log *zap.Logger, now func() time.Time, totalRatings int64) *loadProgress {
	t := now()
	return &loadProgress{log: log, now: now, start: t, total: totalRatings, stage: "load", stageStart: t}
}

// run logs a heartbeat at every tick until ctx ends.
func (p *loadProgress) run(ctx context.Context, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			p.heartbeat()
		}
	}
}

// keys records that the inserts are done and the keys of table are being built.
func (p *loadProgress) keys(table string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stage == "load" {
		p.loadTime = p.now().Sub(p.start)
	}
	p.stage, p.table, p.stageStart = "keys", table, p.now()
}

func (p *loadProgress) heartbeat() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	elapsed := now.Sub(p.start)
	done := p.ratings.Load()
	fields := []zap.Field{
		zap.String("stage", p.stage),
		zap.Int64("ratings_done", done), zap.Int64("ratings_total", p.total),
		zap.Int64("rows_done", p.rows.Load()),
		zap.Duration("elapsed", elapsed.Round(time.Millisecond)),
	}
	switch p.stage {
	case "load":
		if done > 0 && done <= p.total {
			eta := time.Duration(float64(elapsed) * float64(p.total-done) / float64(done))
			fields = append(fields, zap.Duration("eta", eta.Round(time.Second)),
				zap.Float64("rows_per_s", float64(p.rows.Load())/elapsed.Seconds()))
		}
	case "keys":
		// An index build reports no progress of its own through the MySQL protocol.
		fields = append(fields, zap.String("table", p.table), zap.Duration("table_elapsed", now.Sub(p.stageStart).Round(time.Millisecond)),
			zap.Duration("load_duration", p.loadTime.Round(time.Millisecond)))
	}
	p.log.Info("seed progress", fields...)
}
