package train

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/recstream/recstream/inference"
)

// run trains the current stage for at most cfg.Epochs epochs, and not past end (if not zero).
//
// With stop ratings (the content stage) it leaves the towers at the best epoch's weights
// (epoch 0: the weights it started with), where a later epoch replaces the best one only if it
// lowers the mean squared error on stop by more than `significance` standard errors of the
// paired per-rating difference: among epochs the stop ratings cannot tell apart, the earliest
// (the simplest model) is kept. It stops after cfg.Patience epochs without a new best.
//
// Without (the personal stage, whose penalty is its regulariser) it trains until the training
// loss has not fallen by plateauTolerance (relative) for cfg.Patience epochs, and keeps the
// last weights.
func (tr *trainer) run(ctx context.Context, train, stop []row, cfg inference.TrainConfig, name string, rng *rand.Rand, progress func(Progress), end time.Time, now func() time.Time) (stageResult, error) {
	d := tr.d
	var bestErr []float64
	res := stageResult{rmse: math.Inf(1), loss: math.Inf(1)}
	if stop != nil {
		bestErr = d.sqErrors(tr.user, tr.item, stop)
		res.rmse = rmsOf(bestErr)
	}
	if progress != nil {
		progress(Progress{Stage: name, Begin: true, Epochs: cfg.Epochs, StopRMSE: res.rmse, BestRMSE: res.rmse})
	}
	best := [2]*inference.Tower{tr.user.Clone(), tr.item.Clone()}
	batch := cfg.BatchSize
	var draw *customerBatches
	if batch == 0 && stop != nil && len(train) > autoBatchRatings {
		draw = newCustomerBatches(train, autoBatchRatings, rng)
	}
	if batch <= 0 || batch > len(train) || stop == nil {
		batch = len(train)
	}
	order := train
	if batch < len(train) {
		order = slices.Clone(train)
	}
	timeUp := func() bool { return !end.IsZero() && !now().Before(end) }
	stageStart := now()
	lastProgress := Progress{}
	for epoch := 1; epoch <= cfg.Epochs; epoch++ {
		if timeUp() {
			res.timeLimited = true
			break
		}
		start := now()
		if batch < len(order) {
			rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		}
		var sse float64
		seen := 0
		if draw != nil {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			part := draw.next()
			sse, seen = tr.step(part), len(part)
		}
		for b := 0; draw == nil && b < len(order); b += batch {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			if b > 0 && timeUp() {
				res.timeLimited = true
				break
			}
			part := order[b:min(b+batch, len(order))]
			if stop == nil {
				sse += tr.personalStep()
			} else {
				sse += tr.step(part)
			}
			seen += len(part)
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		loss := sse / float64(seen)
		res.epochs = epoch
		rmse := math.NaN()
		if stop != nil {
			errs := d.sqErrors(tr.user, tr.item, stop)
			rmse = rmsOf(errs)
			if better(errs, bestErr) {
				res.rmse, res.best, res.loss = rmse, epoch, loss
				best = [2]*inference.Tower{tr.user.Clone(), tr.item.Clone()}
				bestErr = errs
			}
		} else if loss < res.loss*(1-plateauTolerance) {
			res.best, res.loss = epoch, loss
		}
		done := epoch == cfg.Epochs || epoch-res.best >= cfg.Patience || res.timeLimited
		if progress != nil {
			t := now()
			left := min(cfg.Epochs, res.best+cfg.Patience) - epoch
			eta := time.Duration(float64(t.Sub(stageStart)) / float64(epoch) * float64(left))
			if !end.IsZero() {
				eta = min(eta, max(0, end.Sub(t)))
			}
			if done {
				eta = 0
			}
			p := Progress{Stage: name, Epoch: epoch, Epochs: cfg.Epochs, TrainLoss: loss, StopRMSE: rmse, Duration: t.Sub(start), ETA: eta,
				Done: done, BestEpoch: res.best, BestRMSE: res.rmse, TimeLimited: res.timeLimited}
			if stop == nil {
				p.BestEpoch, p.BestRMSE = epoch, math.NaN()
			}
			progress(p)
			lastProgress = p
		}
		if done {
			break
		}
	}
	if res.timeLimited && progress != nil && !lastProgress.Done {
		// Time ran out before an epoch: report the stage's end all the same.
		p := lastProgress
		p.Stage, p.Epoch, p.Epochs, p.Done, p.TimeLimited, p.ETA, p.Duration = name, res.epochs, cfg.Epochs, true, true, 0, 0
		p.BestEpoch, p.BestRMSE = res.best, res.rmse
		if stop == nil {
			p.BestEpoch, p.BestRMSE, p.StopRMSE = res.epochs, math.NaN(), math.NaN()
		}
		progress(p)
	}
	if stop != nil {
		tr.user, tr.item = best[0], best[1]
		tr.rebind()
	} else {
		res.best = res.epochs
	}
	return res, nil
}

// customerBatches draws the content stage's batches of a large shop (batch_size 0 above
// autoBatchRatings): each pass over the customers, in an order shuffled anew, is split into
// the fewest batches of whole customers with at most about size ratings each. A step's cost is
// dominated by passing each distinct customer and product of its batch through its tower, and
// a batch of random ratings of a large shop holds nearly every customer (with 100 ratings each
// and a tenth of the ratings in the batch, 1 − 0.9¹⁰⁰ of them), so whole customers keep a
// step's cost at that of its ratings.
type customerBatches struct {
	rows    []row   // sorted by customer
	start   []int32 // customer k's rows are rows[start[k]:start[k+1]]
	order   []int32 // customers in drawing order
	pos     int     // position in order
	done    int     // ratings of the pass drawn so far
	batches int     // batches per pass
	batch   int     // batches of the pass drawn so far
	buf     []row
	rng     *rand.Rand
}

func newCustomerBatches(rows []row, size int, rng *rand.Rand) *customerBatches {
	c := &customerBatches{rows: rows, rng: rng, batches: (len(rows) + size - 1) / size}
	for k := range rows {
		if k == 0 || rows[k].u != rows[k-1].u {
			c.start = append(c.start, int32(k))
		}
	}
	c.start = append(c.start, int32(len(rows)))
	c.order = make([]int32, len(c.start)-1)
	for k := range c.order {
		c.order[k] = int32(k)
	}
	c.pos = len(c.order)
	return c
}

// next returns the next batch (valid until the following call).
func (c *customerBatches) next() []row {
	if c.pos == len(c.order) {
		c.rng.Shuffle(len(c.order), func(a, b int) { c.order[a], c.order[b] = c.order[b], c.order[a] })
		c.pos, c.done, c.batch = 0, 0, 0
	}
	c.batch++
	end := int(int64(len(c.rows)) * int64(c.batch) / int64(c.batches))
	c.buf = c.buf[:0]
	for c.pos < len(c.order) && (len(c.buf) == 0 || c.done < end) {
		k := c.order[c.pos]
		c.pos++
		part := c.rows[c.start[k]:c.start[k+1]]
		c.buf = append(c.buf, part...)
		c.done += len(part)
	}
	return c.buf
}
