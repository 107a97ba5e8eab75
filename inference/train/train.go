// Package train is `recstream train`'s code: it fits the two-tower model of package inference
// on ratings (the ETL's, or a CSV export that ReadLabCSV reads) with encoders, towers, a
// hand-written backward pass and Adam, evaluates the procedure against baselines, and publishes
// a versioned artifacts set in the layout of package internal/artifacts. It is a batch job's
// code; the stream worker serves the published model through package inference, which does
// not import this one.
package train

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/recstream/recstream/inference"
)

// Example is one training rating: a customer's features, a product's features and the rating
// in stars (1 to 5). It is one row of the ETL's ratings ⋈ products ⋈ customers join.
type Example struct {
	CustomerNumber int64
	User           inference.UserFeatures
	ProductCode    string
	Item           inference.ItemFeatures
	Rating         float64
}

// User is a customer and the features the user tower embeds.
type User struct {
	CustomerNumber int64
	Features       inference.UserFeatures
}

// Item is a product and the features the item tower embeds.
type Item struct {
	ProductCode string
	Features    inference.ItemFeatures
	// Ratings is the number of training ratings of the product (its popularity).
	Ratings int
}

// Hyper-parameters that are part of the model's definition rather than of the config.
const (
	adamBeta1 = 0.9
	adamBeta2 = 0.999
	adamEps   = 1e-8
	// gradShards is the fixed number of partial gradient sums per batch. It does not depend on
	// GOMAXPROCS, and the partial sums are added in shard order, so training is bit-for-bit
	// reproducible on any machine.
	gradShards = 2
	// earlyStoppingShare is the share of a fit's customers, and then of its remaining
	// ratings, held out to pick the best epoch of each stage.
	earlyStoppingShare = 0.1
)

// Bounds that keep a large shop's content stage at a 1 M-rating shop's cost per epoch
// (variables so that tests can lower them).
var (
	// maxStopRatings bounds the ratings of the customers held out for early stopping: the
	// stop RMSE is computed after every epoch, and beyond a few hundred thousand ratings a
	// larger sample only makes it cost more. At 1 M ratings the 10 % of customers hold about
	// 100,000 ratings, so the bound only applies to larger shops.
	maxStopRatings = 200_000
	// autoBatchRatings is the content stage's batch with batch_size 0: full batch up to this
	// many training ratings; above it, each epoch is one step on a batch of whole customers
	// with at most about this many ratings (customerBatches).
	autoBatchRatings = 1_000_000
)

// Progress is reported when a stage begins and after each of its epochs.
type Progress struct {
	// Phase is the fit the epoch belongs to: PhaseWarm and PhaseCold (the evaluation fits) or
	// PhaseFinal (the published model). Stage is StageContent or StagePersonal, or
	// StageEvaluate while an evaluation fit is scored (Begin only).
	Phase, Stage  string
	Epoch, Epochs int
	// Begin marks the start of a stage (Epoch 0, no loss yet).
	Begin bool
	// TrainLoss is the mean squared error on the scaled target in [-1, 1], over the epoch.
	TrainLoss float64
	// StopRMSE is the RMSE in stars on the stage's early-stopping ratings after the epoch (NaN
	// in the personal stage, which has none).
	StopRMSE float64
	Duration time.Duration
	// ETA is the longest the stage can still take at the pace of its epochs so far: until its
	// patience or its epoch limit runs out (or its share of Options.MaxDuration).
	ETA time.Duration
	// Done marks the stage's last epoch; then BestEpoch and BestRMSE describe the kept weights
	// (the personal stage keeps its last epoch; BestRMSE is NaN).
	Done      bool
	BestEpoch int
	BestRMSE  float64
	// TimeLimited marks a stage that Options.MaxDuration ended before its own stopping rule;
	// it kept its best weights so far.
	TimeLimited bool
}

// Phases of a training run, in order, and the two stages of every fit.
const (
	PhaseWarm     = "warm"
	PhaseCold     = "cold"
	PhaseFinal    = "final"
	StageContent  = "content"
	StagePersonal = "personal"
	StageEvaluate = "evaluate"
)

// Options are TrainRatings' optional settings.
type Options struct {
	// Progress, if not nil, is called on the calling goroutine when a stage begins and after
	// each epoch.
	Progress func(Progress)
	// MaxDuration, if > 0, bounds the training: each fit gets a share of what is left (the
	// evaluation fits a quarter and a third, the published model the rest), each content stage
	// four fifths of its fit's share, and a stage that reaches its share stops with its best
	// weights so far (Metrics.TimeLimited names it).
	MaxDuration time.Duration
	// Now is the clock of MaxDuration and ETAs (time.Now if nil).
	Now func() time.Time
}

// TrainResult is a trained model and what is needed to publish it.
type TrainResult struct {
	Model   *inference.Model
	Metrics inference.Metrics
	// Users and Items are the distinct customers and products of the training data, sorted by
	// id; publishing embeds exactly these.
	Users []User
	Items []Item
}

// Train is TrainRatings on examples (in any order), with progress (may be nil) as
// Options.Progress.
func Train(ctx context.Context, examples []Example, cfg inference.TrainConfig, progress func(Progress)) (*TrainResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("train config: %w", err)
	}
	r, err := NewRatings(examples)
	if err != nil {
		return nil, err
	}
	return TrainRatings(ctx, r, cfg, Options{Progress: progress})
}

// TrainRatings fits encoders and towers on r and evaluates the training procedure. cfg.Seed
// drives the splits, the initial weights and the batch order, so one seed gives bit-identical
// weights and figures (unless Options.MaxDuration cuts a stage short).
//
// A run does three fits with the same procedure (fit): on a warm split (cfg.ValidationShare of
// the ratings held out) and on a cold split (that share of the customers held out with all
// their ratings), each scored on its held-out part the way the worker would score it (encoders
// fitted on the fit's own ratings, embeddings from the model) against baselines; then the
// published model on all ratings. Every fit costs time linear in its ratings (plus its
// customers and products): see fit. TrainRatings returns ctx.Err() if ctx ends.
func TrainRatings(ctx context.Context, r *Ratings, cfg inference.TrainConfig, opts Options) (*TrainResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("train config: %w", err)
	}
	if r == nil || r.Len() == 0 {
		return nil, fmt.Errorf("train: no ratings")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	warmTrain, warmTest, err := warmSplit(r, cfg)
	if err != nil {
		return nil, err
	}
	coldTrain, coldTest, err := coldSplit(r, cfg)
	if err != nil {
		return nil, err
	}
	report := func(phase string) func(Progress) {
		if opts.Progress == nil {
			return nil
		}
		return func(p Progress) { p.Phase = phase; opts.Progress(p) }
	}
	var end time.Time
	if opts.MaxDuration > 0 {
		end = opts.Now().Add(opts.MaxDuration)
	}
	// fitEnd gives a fit weight/remaining of the time left.
	fitEnd := func(weight, remaining float64) time.Time {
		if end.IsZero() {
			return time.Time{}
		}
		now := opts.Now()
		return now.Add(time.Duration(float64(end.Sub(now)) * weight / remaining))
	}
	var m inference.Metrics
	m.MaxDurationSeconds = opts.MaxDuration.Seconds()
	var limited []string
	for k, ev := range []struct {
		phase       string
		train, test []int32
		dst         *inference.Evaluation
	}{
		{PhaseWarm, warmTrain, warmTest, &m.Warm},
		{PhaseCold, coldTrain, coldTest, &m.Cold},
	} {
		model, f, err := fitRatings(ctx, r, ev.train, cfg, ev.phase, report(ev.phase), fitEnd(1, float64(4-k)), opts.Now)
		if err != nil {
			return nil, err
		}
		if p := report(ev.phase); p != nil {
			p(Progress{Stage: StageEvaluate, Begin: true, StopRMSE: math.NaN(), BestRMSE: math.NaN()})
		}
		*ev.dst = evaluate(model, r, ev.train, ev.test, ev.phase == PhaseWarm)
		ev.dst.Split, ev.dst.ContentEpoch, ev.dst.PersonalEpochs = ev.phase, f.content.best, f.personal.epochs
		limited = append(limited, f.limited...)
	}
	all := make([]int32, r.Len())
	for k := range all {
		all[k] = int32(k)
	}
	model, f, err := fitRatings(ctx, r, all, cfg, PhaseFinal, report(PhaseFinal), fitEnd(1, 1), opts.Now)
	if err != nil {
		return nil, err
	}
	m.TimeLimited = strings.Join(append(limited, f.limited...), "; ")
	m.Rows, m.TrainRows, m.EarlyStoppingRows = r.Len(), f.trainRows, r.Len()-f.trainRows
	m.ContentEpoch, m.ContentRMSE = f.content.best, f.content.rmse
	m.PersonalEpochs, m.PersonalLoss = f.personal.epochs, f.personal.loss
	return &TrainResult{Model: model, Metrics: m, Users: r.Users, Items: slices.Clone(r.Items)}, nil
}

// AddItems adds the products of items that are not already in r.Items (products without any
// rating, e.g. from the products table), so that publishing embeds them too; the item tower
// only needs their features. They count as having no rating. It keeps r.Items sorted and
// returns how many were added.
func (r *TrainResult) AddItems(items []Item) int {
	have := make(map[string]bool, len(r.Items))
	for _, it := range r.Items {
		have[it.ProductCode] = true
	}
	added := 0
	for _, it := range items {
		if !have[it.ProductCode] {
			have[it.ProductCode] = true
			it.Ratings = 0
			r.Items = append(r.Items, it)
			added++
		}
	}
	slices.SortFunc(r.Items, func(a, b Item) int { return cmp.Compare(a.ProductCode, b.ProductCode) })
	return added
}

// Random streams of one seed, kept apart so that changing one use does not shift the others.
const (
	streamWarm uint64 = 0x7761726d // "warm"
	streamCold uint64 = 0x636f6c64 // "cold"
	streamFit  uint64 = 0x666974   // "fit", and the phase
)

func seeded(seed int64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), stream))
}

// phaseStream numbers a fit's random stream by its phase name (FNV-1a).
func phaseStream(phase string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(phase); i++ {
		h = (h ^ uint64(phase[i])) * 1099511628211
	}
	return streamFit<<32 | h&0xffffffff
}

// warmSplit holds out cfg.ValidationShare of the ratings (seeded); both parts are indexes
// into r, sorted.
func warmSplit(r *Ratings, cfg inference.TrainConfig) (train, test []int32, err error) {
	n := int(math.Round(cfg.ValidationShare * float64(r.Len())))
	if n < 1 || r.Len()-n < 2 {
		return nil, nil, fmt.Errorf("train: %d ratings are too few to hold out %g of them for the warm evaluation", r.Len(), cfg.ValidationShare)
	}
	all := make([]int32, r.Len())
	for k := range all {
		all[k] = int32(k)
	}
	seeded(cfg.Seed, streamWarm).Shuffle(len(all), func(a, b int) { all[a], all[b] = all[b], all[a] })
	test, train = all[:n], all[n:]
	slices.Sort(train)
	slices.Sort(test)
	return train, test, nil
}

// coldSplit holds out cfg.ValidationShare of the customers (seeded) with all their ratings.
func coldSplit(r *Ratings, cfg inference.TrainConfig) (train, test []int32, err error) {
	n := int(math.Round(cfg.ValidationShare * float64(len(r.Users))))
	if n < 1 || len(r.Users)-n < 1 {
		return nil, nil, fmt.Errorf("train: %d customers are too few to hold out %g of them for the cold evaluation", len(r.Users), cfg.ValidationShare)
	}
	held := make([]bool, len(r.Users))
	for _, u := range seeded(cfg.Seed, streamCold).Perm(len(r.Users))[:n] {
		held[u] = true
	}
	for k, u := range r.U {
		if held[u] {
			test = append(test, int32(k))
		} else {
			train = append(train, int32(k))
		}
	}
	if len(train) < 2 {
		return nil, nil, fmt.Errorf("train: too few ratings outside the %d held-out customers for the cold evaluation", n)
	}
	return train, test, nil
}
