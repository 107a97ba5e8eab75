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
	"sync"
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

// row is one rating of a fit: indexes into Ratings' users and items, the scaled target and
// the stars (16 bytes).
type row struct {
	u, i  int32
	y     float32
	stars float32
}

// sparseRows holds encoded tower inputs by their non-zero entries (compressed rows): a
// customer's input is as wide as the profiles (up to MaxProfiles) but has four non-zeros.
type sparseRows struct {
	off []int32 // row k is idx[off[k]:off[k+1]]
	idx []int32
	val []float32
}

func (s *sparseRows) row(k int32) ([]int32, []float32) {
	lo, hi := s.off[k], s.off[k+1]
	return s.idx[lo:hi], s.val[lo:hi]
}

// encodeSparse encodes n rows of width w (enc writes row k into a zeroed dst).
func encodeSparse(n, w int, enc func(dst []float32, k int)) sparseRows {
	dense := make([]float32, w)
	s := sparseRows{off: make([]int32, 1, n+1)}
	for k := 0; k < n; k++ {
		clear(dense)
		enc(dense, k)
		for j, v := range dense {
			if v != 0 {
				s.idx = append(s.idx, int32(j))
				s.val = append(s.val, v)
			}
		}
		s.off = append(s.off, int32(len(s.idx)))
	}
	return s
}

// dataset is one fit's encoded training data: the encoders fitted on its ratings, every
// customer and product of the Ratings encoded once (those without a rating in the fit have
// no row), and the fit's ratings as rows of indexes.
type dataset struct {
	userEnc, itemEnc inference.Encoder
	xu, xi           sparseRows
	wu, wi           int // input widths
	nUsers, nItems   int
	rows             []row // sorted by (customer, product)
	// identity marks the user input columns of the credit-limit category (see fit).
	identity []bool
}

// newDataset fits the encoders on the ratings idx of r (sorted; the encoders see features,
// never ratings) and encodes them. Each customer and product counts once per rating, as if
// the encoders were fitted on the joined rows.
func newDataset(r *Ratings, idx []int32) (*dataset, error) {
	uN, iN := make([]int, len(r.Users)), make([]int, len(r.Items))
	for _, k := range idx {
		uN[r.U[k]]++
		iN[r.I[k]]++
	}
	profileCol := slices.Index(inference.UserCategorical, inference.ProfileFeature)
	var userCat, itemCat [][]string
	var userNum, itemNum [][]float64
	var uw, iw []float64
	profiles := map[string]int{}
	for u, n := range uN {
		if n == 0 {
			continue
		}
		f := r.Users[u].Features
		cat := f.Categorical()
		userCat, userNum, uw = append(userCat, cat), append(userNum, f.Numeric()), append(uw, float64(n))
		if p := inference.NormalizeCategory(cat[profileCol]); p != "" {
			profiles[p] += n
		}
	}
	for i, n := range iN {
		if n == 0 {
			continue
		}
		f := r.Items[i].Features
		itemCat, itemNum, iw = append(itemCat, f.Categorical()), append(itemNum, f.Numeric()), append(iw, float64(n))
	}
	uohe, err := inference.FitOneHot(inference.UserCategorical, userCat)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if err := uohe.CapCategoriesCounted(profileCol, profiles, MaxProfiles); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	iohe, err := inference.FitOneHot(inference.ItemCategorical, itemCat)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	userEnc, err := inference.NewEncoder("user", uohe, inference.FitStandardWeighted(inference.UserNumeric, userNum, uw), inference.UserCategorical, inference.UserNumeric)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	itemEnc, err := inference.NewEncoder("item", iohe, inference.FitStandardWeighted(inference.ItemNumeric, itemNum, iw), inference.ItemCategorical, inference.ItemNumeric)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	d := &dataset{
		userEnc: userEnc, itemEnc: itemEnc,
		wu: userEnc.Width(), wi: itemEnc.Width(),
		nUsers: len(r.Users), nItems: len(r.Items),
		rows: make([]row, len(idx)), identity: make([]bool, userEnc.Width()),
	}
	d.xu = encodeSparse(d.nUsers, d.wu, func(dst []float32, k int) { userEnc.EncodeUser(dst, r.Users[k].Features) })
	d.xi = encodeSparse(d.nItems, d.wi, func(dst []float32, k int) { itemEnc.EncodeItem(dst, r.Items[k].Features) })
	for n, k := range idx {
		d.rows[n] = row{u: r.U[k], i: r.I[k], y: starsToScaled(float64(r.Stars[k])), stars: r.Stars[k]}
	}
	off := 0
	for c, cats := range uohe.Categories {
		if uohe.Features[c] == identityFeature {
			for j := off; j < off+len(cats); j++ {
				d.identity[j] = true
			}
		}
		off += len(cats)
	}
	return d, nil
}

// identityFeature is the user one-hot feature that recognises a known customer.
const identityFeature = inference.ProfileFeature

// MaxProfiles bounds the profile categories (and so the user tower's input width): beyond it,
// the profiles with the most ratings are kept (ties by profile) and the other customers are
// served by the content sub-network alone.
const MaxProfiles = 10000

// fitRatings fits a model on the ratings idx of r (sorted); fitEnd, if not zero, ends it.
func fitRatings(ctx context.Context, r *Ratings, idx []int32, cfg inference.TrainConfig, phase string, progress func(Progress), fitEnd time.Time, now func() time.Time) (*inference.Model, *fitted, error) {
	d, err := newDataset(r, idx)
	if err != nil {
		return nil, nil, err
	}
	f, err := d.fit(ctx, cfg, phase, progress, fitEnd, now)
	if err != nil {
		return nil, nil, err
	}
	model, err := inference.NewModel(f.user, f.item, d.userEnc, d.itemEnc)
	if err != nil {
		return nil, nil, fmt.Errorf("train: %w", err)
	}
	return model, f, nil
}

// fitted is one fit's weights and how its two stages went.
type fitted struct {
	user, item        *inference.Tower
	trainRows         int
	content, personal stageResult
	// limited names the stages the max duration ended (Metrics.TimeLimited).
	limited []string
}

// stageResult describes one stage: the kept epoch, how many ran, its loss and stop RMSE, and
// whether the max duration ended it.
type stageResult struct {
	best, epochs int
	loss, rmse   float64
	timeLimited  bool
}

// fit trains towers on the dataset in two stages.
//
// Content: both towers, except the user tower's identity sub-network
// (inference.IdentityHidden1), learn what generalises to customers they have not seen: from
// city, country and the standardised credit limit, and from the product's features. Its epoch
// is picked on the ratings of earlyStoppingShare of the customers, held out whole, and only a
// significant gain counts (see run): on data where the features say nothing about new
// customers, the content model stays at (or near) its start, the mean rating.
//
// Personal: only the identity sub-network trains, on all ratings, and only into the user bias
// output: the model recognises the customers it was trained on by their profile and learns
// each one's own effect, shrunk toward the content model's prediction for them like the
// shrunk per-user mean (k = bias_penalty). Every other weight stays as the content stage left
// it, so a customer whose profile the model does not know gets exactly the content model's
// embedding. It runs until its training loss stops falling.
//
// Both stages minimise the mean squared error of the scaled rating plus penalties (see
// trainer.gradients) and L2 weight decay, with Adam. The content stage takes mini-batches of
// cfg.BatchSize ratings; a step costs one pass of every customer and product of its batch
// through its tower, so full batches make an epoch cost O(customers + products + ratings)
// where mini-batches of random ratings of a large shop cost that per batch. With batch_size 0
// it is full-batch up to autoBatchRatings training ratings, and above that each epoch is one
// step on a batch of whole customers (customerBatches), which bounds an epoch's cost; the
// early-stopping customers then hold at most about maxStopRatings ratings.
// The personal stage is always full-batch: with the item tower and the content sub-network
// fixed, its loss is a quadratic function of each customer's bias whose coefficients are sums
// over the customer's ratings (personalStats), so an epoch costs O(customers) after one pass
// over the ratings.
func (d *dataset) fit(ctx context.Context, cfg inference.TrainConfig, phase string, progress func(Progress), fitEnd time.Time, now func() time.Time) (*fitted, error) {
	rng := seeded(cfg.Seed, phaseStream(phase))
	// Hold out customers for the content stage (when there are at least two), then ratings.
	seen := make([]bool, d.nUsers)
	var cust []int32
	for _, r := range d.rows {
		if !seen[r.u] {
			seen[r.u] = true
			cust = append(cust, r.u)
		}
	}
	held := make([]bool, d.nUsers)
	if len(cust) >= 2 {
		n := min(max(1, int(math.Round(earlyStoppingShare*float64(len(cust))))), len(cust)-1)
		perRating := make([]int, d.nUsers)
		for _, r := range d.rows {
			perRating[r.u]++
		}
		heldRatings := 0
		for m, k := range rng.Perm(len(cust))[:n] {
			if m > 0 && heldRatings+perRating[cust[k]] > maxStopRatings {
				break // a large shop: enough customers to judge an epoch by
			}
			held[cust[k]] = true
			heldRatings += perRating[cust[k]]
		}
	}
	var stop, train []row
	for _, r := range d.rows {
		if held[r.u] {
			stop = append(stop, r)
		} else {
			train = append(train, r)
		}
	}
	if len(stop) == 0 { // a single customer: the content stage stops on held-out ratings
		rng.Shuffle(len(train), func(a, b int) { train[a], train[b] = train[b], train[a] })
		n := min(max(1, int(math.Round(earlyStoppingShare*float64(len(train))))), len(train)-1)
		stop, train = train[:n], train[n:]
		slices.SortFunc(train, func(a, b row) int { return cmp.Or(cmp.Compare(a.u, b.u), cmp.Compare(a.i, b.i)) })
	}
	if len(train) == 0 {
		return nil, fmt.Errorf("train: %d ratings are too few to fit", len(d.rows))
	}

	tr := newTrainer(d, cfg)
	tr.user.InitUniform(rng)
	tr.item.InitUniform(rng)
	tr.zeroBlocks()
	// Untrained, the model predicts the mean rating for every pair: the user tower's outputs
	// start at zero (its bias output at the mean), and so does the item bias. The item tower's
	// interaction outputs keep their random start, so the interaction gradients are not zero.
	// Outputs the bias head does not read stay zero.
	for o := 0; o < inference.EmbeddingDim; o++ {
		zeroOutput(tr.user, o)
	}
	zeroOutput(tr.item, inference.ItemBiasIndex)
	zeroOutput(tr.item, inference.UserBiasIndex)
	var mean float64
	for _, r := range train {
		mean += float64(r.y)
	}
	tr.mean = float32(mean / float64(len(train)))
	tr.user.Layers[2].B[inference.UserBiasIndex] = tr.mean

	// The content stage gets four fifths of the fit's time, the personal stage the rest.
	var contentEnd time.Time
	if !fitEnd.IsZero() {
		start := now()
		contentEnd = start.Add(fitEnd.Sub(start) * 4 / 5)
	}
	f := &fitted{trainRows: len(train)}
	var err error
	tr.begin(stageContent, train)
	if f.content, err = tr.run(ctx, train, stop, cfg, StageContent, rng, progress, contentEnd, now); err != nil {
		return nil, err
	}
	tr.begin(stagePersonal, d.rows)
	if f.personal, err = tr.run(ctx, d.rows, nil, cfg, StagePersonal, rng, progress, fitEnd, now); err != nil {
		return nil, err
	}
	for _, s := range []struct {
		name string
		res  stageResult
	}{{StageContent, f.content}, {StagePersonal, f.personal}} {
		if s.res.timeLimited {
			f.limited = append(f.limited, fmt.Sprintf("%s %s: stopped after %d epochs, kept epoch %d", phase, s.name, s.res.epochs, s.res.best))
		}
	}
	f.user, f.item = tr.user, tr.item
	return f, nil
}

// zeroBlocks sets the zeros of the user tower's block structure: every weight neither stage
// trains, and the identity sub-network's readout, which starts at zero so that the personal
// stage starts from the content model.
func (tr *trainer) zeroBlocks() {
	for p, param := range towerSlices(tr.user) {
		for i := range param {
			if !tr.userMask[stageContent][p][i] && !(p != 4 && tr.userMask[stagePersonal][p][i]) {
				param[i] = 0
			}
		}
	}
}

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

// significance is how many standard errors a content epoch must gain to replace the best one.
const significance = 2

// plateauTolerance is the relative fall of the training loss that counts as progress in the
// personal stage.
const plateauTolerance = 1e-4

// better reports whether the squared errors e beat best: a mean lower by more than
// significance standard errors of the mean paired difference.
func better(e, best []float64) bool {
	n := float64(len(e))
	var sum, sq float64
	for i := range e {
		x := e[i] - best[i]
		sum += x
		sq += x * x
	}
	mean := sum / n
	sd := math.Sqrt(max(0, sq/n-mean*mean))
	return mean < -significance*sd/math.Sqrt(n)
}

func rmsOf(sq []float64) float64 {
	var s float64
	for _, x := range sq {
		s += x
	}
	return math.Sqrt(s / float64(len(sq)))
}

// sqErrors returns the squared errors in stars of the towers on rows.
func (d *dataset) sqErrors(user, item *inference.Tower, rows []row) []float64 {
	ue, ie := d.embedUsed(user, item, rows)
	out := make([]float64, len(rows))
	for k, r := range rows {
		p := inference.Stars(inference.Dot(ue[r.u], ie[r.i]))
		s := float64(r.stars)
		out[k] = (p - s) * (p - s)
	}
	return out
}

// embedUsed returns the embeddings of the users and items rows refer to (nil for the others),
// computed like inference.Tower.Embed (same arithmetic) from the sparse inputs, on
// gradShards goroutines.
func (d *dataset) embedUsed(user, item *inference.Tower, rows []row) (ue, ie [][]float32) {
	ue, ie = make([][]float32, d.nUsers), make([][]float32, d.nItems)
	var us, is []int32
	for _, r := range rows {
		if ue[r.u] == nil {
			ue[r.u] = []float32{}
			us = append(us, r.u)
		}
		if ie[r.i] == nil {
			ie[r.i] = []float32{}
			is = append(is, r.i)
		}
	}
	eu := make([]float32, len(us)*inference.EmbeddingDim)
	ei := make([]float32, len(is)*inference.EmbeddingDim)
	parallel(func(s int) {
		st := inference.NewRowState()
		for n := s * len(us) / gradShards; n < (s+1)*len(us)/gradShards; n++ {
			idx, val := d.xu.row(us[n])
			forward(user, idx, val, st, inference.Hidden1, inference.Hidden2)
			inference.HeadBias.Apply(inference.UserSide, st)
			copy(eu[n*inference.EmbeddingDim:], st.U)
		}
		for n := s * len(is) / gradShards; n < (s+1)*len(is)/gradShards; n++ {
			idx, val := d.xi.row(is[n])
			forward(item, idx, val, st, inference.Hidden1, inference.Hidden2)
			inference.HeadBias.Apply(inference.ItemSide, st)
			copy(ei[n*inference.EmbeddingDim:], st.U)
		}
	})
	for n, k := range us {
		ue[k] = eu[n*inference.EmbeddingDim : (n+1)*inference.EmbeddingDim]
	}
	for n, k := range is {
		ie[k] = ei[n*inference.EmbeddingDim : (n+1)*inference.EmbeddingDim]
	}
	return ue, ie
}

// forward runs one sparse input row (idx ascending) through t like
// inference.Tower.ForwardRow, computing only the first n1 units of the first hidden layer
// and the first n2 of the second (the content stage leaves out the identity units, whose
// readout is zero then; the sums skip only zero terms, so the outputs are the same).
func forward(t *inference.Tower, idx []int32, val []float32, s *inference.RowState, n1, n2 int) {
	d0 := &t.Layers[0]
	for o := 0; o < n1; o++ {
		w := d0.W[o*d0.In : (o+1)*d0.In]
		acc := d0.B[o]
		for k, j := range idx {
			acc += w[j] * val[k]
		}
		s.H1[o] = max(acc, 0)
	}
	d1 := &t.Layers[1]
	for o := 0; o < n2; o++ {
		s.H2[o] = max(d1.B[o]+inference.Dot(d1.W[o*d1.In:o*d1.In+n1], s.H1[:n1]), 0)
	}
	d2 := &t.Layers[2]
	for o := 0; o < d2.Out; o++ {
		s.Z[o] = d2.B[o] + inference.Dot(d2.W[o*d2.In:o*d2.In+n2], s.H2[:n2])
	}
}

// Training stages (see fit).
type stage int

const (
	stageContent stage = iota
	stagePersonal
)

// trainer holds the towers being trained and the optimiser state.
type trainer struct {
	d          *dataset
	user, item *inference.Tower
	stage      stage

	lr, wd float32
	t      int               // Adam step
	params [][]float32       // every parameter slice, user tower then item tower
	m, v   [][]float32       // Adam moments, parallel to params
	shards [gradShards]shard // per-shard gradients and scratch
	grads  [][]float32       // summed gradients, parallel to params
	// userMask[stage][p][i] says whether the stage trains element i of the user tower's
	// parameter p (W0, B0, W1, B1, W2, B2); the content stage trains the whole item tower, the
	// personal stage none of it.
	userMask [2][6][]bool

	// Penalties (see gradients): the training rating counts of each user and item, the mean
	// target, and in the personal stage the content stage's user embeddings.
	nu, ni                    []int
	mean                      float32
	biasPenalty, embedPenalty float32
	anchor                    [][]float32
	itemEmb                   [][]float32 // personal stage: the (fixed) item embeddings
	// The personal stage's per-customer sums (see personalStats), for the customers with
	// ratings, and the number of ratings.
	personal     []personalStats
	personalRows int

	// Per-step scratch: the batch's distinct users and items, their states and the loss
	// gradients with respect to their embeddings.
	uSlot, iSlot   []int // slot of a user / item in the batch, -1 if absent
	uCount, iCount []int // rows of a slot in the batch
	uList, iList   []int32
	uState, iState []*inference.RowState
	du, dv         []float32 // len(list)*EmbeddingDim
}

// shard accumulates the gradients of its part of a batch.
type shard struct {
	gu, gi *inference.Tower
	grads  [][]float32 // views of gu and gi, parallel to trainer.params
	dz     []float32
	dh2    []float32
	dh1    []float32
	// The loss part of the batch: its squared errors and gradients with respect to the
	// embeddings of the batch's slots (summed over the shard's share of the rows).
	sse            float64
	du, dv         []float32
	uCount, iCount []int
}

func towerSlices(t *inference.Tower) [][]float32 {
	var s [][]float32
	for l := range t.Layers {
		s = append(s, t.Layers[l].W, t.Layers[l].B)
	}
	return s
}

func newTrainer(d *dataset, cfg inference.TrainConfig) *trainer {
	tr := &trainer{d: d, user: inference.NewTower(d.wu), item: inference.NewTower(d.wi),
		lr: float32(cfg.LearningRate), wd: float32(cfg.WeightDecay),
		biasPenalty: float32(cfg.BiasPenalty), embedPenalty: float32(cfg.EmbeddingPenalty),
		uSlot: make([]int, d.nUsers), iSlot: make([]int, d.nItems)}
	for i := range tr.uSlot {
		tr.uSlot[i] = -1
	}
	for i := range tr.iSlot {
		tr.iSlot[i] = -1
	}
	tr.buildMasks()
	tr.rebind()
	for _, p := range tr.params {
		tr.m = append(tr.m, make([]float32, len(p)))
		tr.v = append(tr.v, make([]float32, len(p)))
		tr.grads = append(tr.grads, make([]float32, len(p)))
	}
	for s := range tr.shards {
		sh := &tr.shards[s]
		sh.gu, sh.gi = inference.NewTower(d.wu), inference.NewTower(d.wi)
		sh.grads = append(towerSlices(sh.gu), towerSlices(sh.gi)...)
		sh.dz = make([]float32, inference.EmbeddingDim)
		sh.dh2, sh.dh1 = make([]float32, inference.Hidden2), make([]float32, inference.Hidden1)
	}
	return tr
}

// rebind points params at the current towers' slices.
func (tr *trainer) rebind() {
	tr.params = append(towerSlices(tr.user), towerSlices(tr.item)...)
}

// begin starts a stage on rows: fresh optimiser state and the penalties' counts and anchors.
func (tr *trainer) begin(s stage, rows []row) {
	d := tr.d
	tr.stage, tr.t = s, 0
	for p := range tr.m {
		clear(tr.m[p])
		clear(tr.v[p])
	}
	tr.nu, tr.ni = make([]int, d.nUsers), make([]int, d.nItems)
	for _, r := range rows {
		tr.nu[r.u]++
		tr.ni[r.i]++
	}
	if s == stagePersonal {
		// The content stage's embeddings: every user's anchor, and the items (fixed from now).
		ue, ie := d.embedUsed(tr.user, tr.item, rows)
		tr.anchor = make([][]float32, d.nUsers)
		for u := range ue {
			if ue[u] != nil {
				tr.anchor[u] = slices.Clone(ue[u])
			}
		}
		tr.itemEmb = ie
		tr.beginPersonal(rows)
	}
}

// step runs one mini-batch (gradients, then an Adam update) and returns the batch's sum of
// squared errors (scaled target) measured before the update.
func (tr *trainer) step(batch []row) float64 {
	sse := tr.gradients(batch)
	tr.adam()
	return sse
}

// personalStep runs one full-batch step of the personal stage and returns the sum of squared
// errors before the update.
func (tr *trainer) personalStep() float64 {
	sse := tr.personalGradients()
	tr.adam()
	return sse
}

// gradients computes tr.grads for the content stage, the gradient of the batch's loss: the
// mean over the batch of the squared error of the scaled rating plus, per rating, the penalties
//
//	(bias_penalty/n_u)·(b_u − a_u)² + (embedding_penalty/n_u)·|f_u − g_u|²
//	(bias_penalty/n_i)·(c·d_i)² + (embedding_penalty/n_i)·|g_i|²          (content stage)
//
// where n_u, n_i are the user's and item's training ratings, so that an epoch adds each
// penalty once per user and per item whatever its number of ratings: the user bias b_u is
// shrunk toward a_u like the shrunk per-user mean (k = bias_penalty). In the content stage
// a_u is the mean rating and the anchor of f_u is 0; in the personal stage both are the
// content stage's embedding of the user (see personalGradients), so a customer's own effect
// is shrunk toward what the content model predicts for them. Every distinct user and item of
// the batch goes through its tower once, the batch's gradients are summed per user and item,
// then each is back-propagated once. It returns the batch's sum of squared errors.
func (tr *trainer) gradients(batch []row) float64 {
	d := tr.d
	tr.uList, tr.iList = tr.uList[:0], tr.iList[:0]
	for _, r := range batch {
		if tr.uSlot[r.u] < 0 {
			tr.uSlot[r.u] = len(tr.uList)
			tr.uList = append(tr.uList, r.u)
		}
		if tr.iSlot[r.i] < 0 {
			tr.iSlot[r.i] = len(tr.iList)
			tr.iList = append(tr.iList, r.i)
		}
	}
	for len(tr.uState) < len(tr.uList) {
		tr.uState = append(tr.uState, inference.NewRowState())
	}
	for len(tr.iState) < len(tr.iList) {
		tr.iState = append(tr.iState, inference.NewRowState())
	}
	nu, ni := len(tr.uList), len(tr.iList)
	const dim = inference.EmbeddingDim
	c1, c2 := inference.Hidden1-inference.IdentityHidden1, inference.Hidden2-inference.IdentityHidden2

	// Forward, split by slot ranges; the user tower without its identity units.
	parallel(func(s int) {
		for k := s * nu / gradShards; k < (s+1)*nu/gradShards; k++ {
			st := tr.uState[k]
			idx, val := d.xu.row(tr.uList[k])
			forward(tr.user, idx, val, st, c1, c2)
			inference.HeadBias.Apply(inference.UserSide, st)
		}
		for k := s * ni / gradShards; k < (s+1)*ni/gradShards; k++ {
			st := tr.iState[k]
			idx, val := d.xi.row(tr.iList[k])
			forward(tr.item, idx, val, st, inference.Hidden1, inference.Hidden2)
			inference.HeadBias.Apply(inference.ItemSide, st)
		}
	})

	// Loss: d(mean squared error)/d(score) = 2(p-y)/B, summed into each embedding's gradient;
	// each shard takes a contiguous share of the batch, and the shards' sums are added in
	// shard order.
	scale := 2 / float32(len(batch))
	parallel(func(s int) {
		sh := &tr.shards[s]
		sh.du, sh.dv = grow(sh.du, nu*dim), grow(sh.dv, ni*dim)
		sh.uCount, sh.iCount = grow(sh.uCount, nu), grow(sh.iCount, ni)
		sh.sse = 0
		for _, r := range batch[s*len(batch)/gradShards : (s+1)*len(batch)/gradShards] {
			ku, ki := tr.uSlot[r.u], tr.iSlot[r.i]
			u, v := tr.uState[ku].U, tr.iState[ki].U
			diff := inference.Dot(u, v) - r.y
			sh.sse += float64(diff) * float64(diff)
			dp := scale * diff
			axpy(dp, v, sh.du[ku*dim:(ku+1)*dim])
			axpy(dp, u, sh.dv[ki*dim:(ki+1)*dim])
			sh.uCount[ku]++
			sh.iCount[ki]++
		}
	})
	tr.du, tr.dv = grow(tr.du, nu*dim), grow(tr.dv, ni*dim)
	tr.uCount, tr.iCount = grow(tr.uCount, nu), grow(tr.iCount, ni)
	var sse float64
	for s := range tr.shards {
		sh := &tr.shards[s]
		sse += sh.sse
		axpy(1, sh.du, tr.du)
		axpy(1, sh.dv, tr.dv)
		for k, n := range sh.uCount {
			tr.uCount[k] += n
		}
		for k, n := range sh.iCount {
			tr.iCount[k] += n
		}
	}
	for k, u := range tr.uList {
		w := scale * float32(tr.uCount[k]) / float32(tr.nu[u])
		e, g := tr.uState[k].U, tr.du[k*dim:(k+1)*dim]
		axpy(w*tr.embedPenalty, e[:inference.InteractionDim], g[:inference.InteractionDim])
		g[inference.UserBiasIndex] += w * tr.biasPenalty * (e[inference.UserBiasIndex] - tr.mean)
	}
	for k, i := range tr.iList {
		w := scale * float32(tr.iCount[k]) / float32(tr.ni[i])
		e, g := tr.iState[k].U, tr.dv[k*dim:(k+1)*dim]
		axpy(w*tr.embedPenalty, e[:inference.InteractionDim], g[:inference.InteractionDim])
		g[inference.ItemBiasIndex] += w * tr.biasPenalty * inference.ItemBiasWeight * inference.ItemBiasWeight * e[inference.ItemBiasIndex]
	}

	// Backward, split by slot ranges; each shard sums into its own gradients.
	parallel(func(s int) {
		sh := &tr.shards[s]
		for _, g := range sh.grads {
			clear(g)
		}
		for k := s * nu / gradShards; k < (s+1)*nu/gradShards; k++ {
			st := tr.uState[k]
			idx, val := d.xu.row(tr.uList[k])
			headBackward(inference.UserSide, st, tr.du[k*dim:(k+1)*dim], sh.dz)
			sh.backward(tr.user, sh.gu, st, idx, val, c1, c2)
		}
		for k := s * ni / gradShards; k < (s+1)*ni/gradShards; k++ {
			st := tr.iState[k]
			idx, val := d.xi.row(tr.iList[k])
			headBackward(inference.ItemSide, st, tr.dv[k*dim:(k+1)*dim], sh.dz)
			sh.backward(tr.item, sh.gi, st, idx, val, inference.Hidden1, inference.Hidden2)
		}
	})
	tr.sumShards(len(tr.grads))
	for _, u := range tr.uList {
		tr.uSlot[u] = -1
	}
	for _, i := range tr.iList {
		tr.iSlot[i] = -1
	}
	return sse
}

// sumShards adds the shards' gradients of the first n parameters into tr.grads, in shard
// order.
func (tr *trainer) sumShards(n int) {
	for p := range tr.grads[:n] {
		g := tr.grads[p]
		copy(g, tr.shards[0].grads[p])
		for s := 1; s < gradShards; s++ {
			axpy(1, tr.shards[s].grads[p], g)
		}
	}
}

// personalStats is what the personal stage's loss needs of one customer's ratings. In that
// stage only the user bias output b (raw) changes; the interaction outputs f, the item
// embeddings v_i = [g_i, 1, d_i] and c are fixed, and the head scales (f, b) by
// k = min(1, R/|(f, b)|). A rating's prediction is k·(p_i + b) + q_i with p_i = f·g_i and
// q_i = c·d_i, so with r_i = y_i − q_i the customer's squared errors sum to
//
//	k²·(Σp² + 2b·Σp + n·b²) − 2k·(Σpr + b·Σr) + Σr²
//
// which these sums give exactly for any b, in O(1).
type personalStats struct {
	u                   int32
	n, sp, spp, sr, spr float64
	srr                 float64
	// f·f and f·a (a: the anchor's interaction part), the anchor's bias, and the content
	// sub-network's part of b (the identity part is added each step).
	ff, fa, a30 float64
	zc          float32
	// The customer's identity inputs (the profile column), if the model knows the profile.
	idx []int32
	val []float32
}

// beginPersonal computes the personal stage's per-customer sums over rows.
func (tr *trainer) beginPersonal(rows []row) {
	d := tr.d
	const fd = inference.InteractionDim
	tr.personal, tr.personalRows = tr.personal[:0], len(rows)
	st := inference.NewRowState()
	for lo := 0; lo < len(rows); {
		hi := lo
		for hi < len(rows) && rows[hi].u == rows[lo].u {
			hi++
		}
		u := rows[lo].u
		idx, val := d.xu.row(u)
		forward(tr.user, idx, val, st, inference.Hidden1, inference.Hidden2)
		ps := personalStats{u: u, n: float64(hi - lo), zc: st.Z[inference.UserBiasIndex], a30: float64(tr.anchor[u][inference.UserBiasIndex])}
		f := st.Z[:fd]
		for o, x := range f {
			ps.ff += float64(x) * float64(x)
			ps.fa += float64(x) * float64(tr.anchor[u][o])
		}
		for k, j := range idx {
			if d.identity[j] {
				ps.idx, ps.val = append(ps.idx, j), append(ps.val, val[k])
			}
		}
		for _, r := range rows[lo:hi] {
			v := tr.itemEmb[r.i]
			var p float64
			for o, x := range f {
				p += float64(x) * float64(v[o])
			}
			q := inference.ItemBiasWeight * float64(v[inference.ItemBiasIndex])
			y := float64(r.y) - q
			ps.sp += p
			ps.spp += p * p
			ps.sr += y
			ps.spr += p * y
			ps.srr += y * y
		}
		tr.personal = append(tr.personal, ps)
		lo = hi
	}
}

// personalGradients computes tr.grads for the personal stage over all its ratings (the
// gradient of the same loss as gradients, with a_u the content stage's embedding of the
// user: (bias_penalty/n_u)·(b_u − a_b)² + (embedding_penalty/n_u)·|f_u − a_f|² per rating)
// from the per-customer sums, and returns the sum of squared errors. Only the identity
// sub-network's path into the user bias is trained, so each customer's forward and backward
// pass runs on that path alone.
func (tr *trainer) personalGradients() float64 {
	d := tr.d
	const (
		c1, c2 = inference.Hidden1 - inference.IdentityHidden1, inference.Hidden2 - inference.IdentityHidden2
		h1, h2 = inference.IdentityHidden1, inference.IdentityHidden2
		bias   = inference.UserBiasIndex
	)
	W0, B0 := tr.user.Layers[0].W, tr.user.Layers[0].B
	W1, B1 := tr.user.Layers[1].W, tr.user.Layers[1].B
	W2 := tr.user.Layers[2].W
	wu, H1, H2 := d.wu, inference.Hidden1, inference.Hidden2
	s2 := 2 / float64(tr.personalRows)
	lb, le := float64(tr.biasPenalty), float64(tr.embedPenalty)
	R := inference.UserRadius
	n := len(tr.personal)
	parallel(func(s int) {
		sh := &tr.shards[s]
		for _, g := range sh.grads[:6] {
			clear(g)
		}
		g0, g1, g2 := sh.gu.Layers[0].W, sh.gu.Layers[1].W, sh.gu.Layers[2].W
		a1, a2 := sh.dh1[:h1], sh.dh2[:h2] // activations of the identity units
		var da1, da2 [inference.IdentityHidden1]float32
		sh.sse = 0
		for k := s * n / gradShards; k < (s+1)*n/gradShards; k++ {
			ps := &tr.personal[k]
			for o := 0; o < h1; o++ {
				w := W0[(c1+o)*wu : (c1+o+1)*wu]
				acc := B0[c1+o]
				for m, j := range ps.idx {
					acc += w[j] * ps.val[m]
				}
				a1[o] = max(acc, 0)
			}
			for o := 0; o < h2; o++ {
				a2[o] = max(B1[c2+o]+inference.Dot(W1[(c2+o)*H1+c1:(c2+o+1)*H1], a1), 0)
			}
			b := float64(ps.zc + inference.Dot(W2[bias*H2+c2:(bias+1)*H2], a2))
			norm := math.Sqrt(ps.ff + b*b)
			kk := 1.0
			if norm > R {
				kk = R / norm
			}
			A := ps.spp + 2*b*ps.sp + ps.n*b*b
			B := ps.spr + b*ps.sr
			sh.sse += kk*kk*A - 2*kk*B + ps.srr
			if len(ps.idx) == 0 {
				continue // no identity input: nothing to train
			}
			pen := s2 * lb * (kk*b - ps.a30)
			du := s2*(kk*(ps.sp+ps.n*b)-ps.sr) + pen
			dz := du
			if norm > R {
				wdu := s2*(kk*A-B) + s2*le*(kk*ps.ff-ps.fa) + b*pen
				dz = kk * (du - b*wdu/(norm*norm))
			}
			dzf := float32(dz)
			// Back through the identity path: W2[bias, identity], W1[identity, identity],
			// W0[identity, profile].
			for j := 0; j < h2; j++ {
				g2[bias*H2+c2+j] += dzf * a2[j]
				da2[j] = 0
				if a2[j] > 0 {
					da2[j] = dzf * W2[bias*H2+c2+j]
				}
			}
			clear(da1[:h1])
			for o := 0; o < h2; o++ {
				dd := da2[o]
				if dd == 0 {
					continue
				}
				axpy(dd, a1, g1[(c2+o)*H1+c1:(c2+o+1)*H1])
				axpy(dd, W1[(c2+o)*H1+c1:(c2+o+1)*H1], da1[:h1])
			}
			for o := 0; o < h1; o++ {
				dd := da1[o]
				if dd == 0 || a1[o] <= 0 {
					continue
				}
				w := g0[(c1+o)*wu : (c1+o+1)*wu]
				for m, j := range ps.idx {
					w[j] += dd * ps.val[m]
				}
			}
		}
	})
	tr.sumShards(6) // the item tower is fixed
	var sse float64
	for s := range tr.shards {
		sse += tr.shards[s].sse
	}
	return sse
}

// grow returns s resized to n zeroed elements.
func grow[T float32 | int](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// parallel runs fn(0..gradShards-1) concurrently and waits.
func parallel(fn func(s int)) {
	var wg sync.WaitGroup
	for s := 1; s < gradShards; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(s)
		}()
	}
	fn(0)
	wg.Wait()
}

// starsToScaled maps a rating in [1, 5] to the training target in [-1, 1] (inference.Stars
// maps back).
func starsToScaled(r float64) float32 { return float32((r-1)/2 - 1) }

// zeroOutput clears output o of the tower's last layer (weights and bias).
func zeroOutput(t *inference.Tower, o int) {
	d := &t.Layers[2]
	clear(d.W[o*d.In : (o+1)*d.In])
	d.B[o] = 0
}

// axpy computes y += alpha * x.
func axpy(alpha float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += alpha * v
	}
}

// headBackward turns dL/du (the embedding's gradient) into dL/dz (the raw output's) for the
// bias head (inference.HeadBias.Apply), the only head that is trained.
func headBackward(sd inference.Side, s *inference.RowState, du, dz []float32) {
	if sd == inference.ItemSide {
		copy(dz, du)
		dz[inference.UserBiasIndex] = 0 // the constant 1
		return
	}
	dz[inference.ItemBiasIndex] = 0 // the constant c
	w, g := s.Z[:inference.UserBiasIndex+1], du[:inference.UserBiasIndex+1]
	if s.N <= inference.UserRadius {
		copy(dz, g)
		return
	}
	// u = r·w/|w|  ⇒  dw = r/|w| · (du − ŵ (ŵ·du)), ŵ = w/|w|
	var c float64
	for o := range w {
		c += float64(w[o]) * float64(g[o])
	}
	c /= s.N * s.N
	k := inference.UserRadius / s.N
	for o := range w {
		dz[o] = float32(k * (float64(g[o]) - float64(w[o])*c))
	}
}

// backward adds the gradient of one sparse input row to g, given sh.dz = dL/dz for the
// tower's raw output, through the first n1 and n2 units of the hidden layers (see forward).
// (adam updates only what the stage trains.)
func (sh *shard) backward(t, g *inference.Tower, s *inference.RowState, idx []int32, val []float32, n1, n2 int) {
	d2, g2 := &t.Layers[2], &g.Layers[2]
	dh2 := sh.dh2[:n2]
	clear(dh2)
	for o, d := range sh.dz {
		if d == 0 {
			continue
		}
		axpy(d, s.H2[:n2], g2.W[o*d2.In:o*d2.In+n2])
		g2.B[o] += d
		axpy(d, d2.W[o*d2.In:o*d2.In+n2], dh2)
	}
	for i, h := range s.H2[:n2] {
		if h <= 0 {
			dh2[i] = 0
		}
	}
	d1, g1 := &t.Layers[1], &g.Layers[1]
	dh1 := sh.dh1[:n1]
	clear(dh1)
	for o, d := range dh2 {
		if d == 0 {
			continue
		}
		axpy(d, s.H1[:n1], g1.W[o*d1.In:o*d1.In+n1])
		g1.B[o] += d
		axpy(d, d1.W[o*d1.In:o*d1.In+n1], dh1)
	}
	g0 := &g.Layers[0]
	in := g0.In
	for o, d := range dh1 {
		if d == 0 || s.H1[o] <= 0 {
			continue
		}
		g0.B[o] += d
		w := g0.W[o*in : (o+1)*in]
		for k, j := range idx {
			w[j] += d * val[k]
		}
	}
}

// adam applies one Adam update, with the L2 weight decay added to the gradient (like
// torch.optim.Adam's weight_decay), to the parameters the stage trains: in the content stage
// every parameter except the user tower's identity columns, in the personal stage only those.
func (tr *trainer) adam() {
	tr.t++
	bc1 := float32(1 - math.Pow(adamBeta1, float64(tr.t)))
	bc2 := float32(1 - math.Pow(adamBeta2, float64(tr.t)))
	update := func(p, i int) {
		param, m, v := tr.params[p], tr.m[p], tr.v[p]
		gi := tr.grads[p][i] + tr.wd*param[i]
		m[i] = adamBeta1*m[i] + (1-adamBeta1)*gi
		v[i] = adamBeta2*v[i] + (1-adamBeta2)*gi*gi
		mh := m[i] / bc1
		vh := v[i] / bc2
		param[i] -= tr.lr * mh / (float32(math.Sqrt(float64(vh))) + adamEps)
	}
	for p, param := range tr.params {
		if p >= 6 {
			if tr.stage == stagePersonal {
				break
			}
			for i := range param {
				update(p, i)
			}
			continue
		}
		mask := tr.userMask[tr.stage][p]
		for i := range param {
			if mask[i] {
				update(p, i)
			}
		}
	}
}

// buildMasks lays out the user tower's two sub-networks (see inference.IdentityHidden1).
func (tr *trainer) buildMasks() {
	d := tr.d
	c1, c2 := inference.Hidden1-inference.IdentityHidden1, inference.Hidden2-inference.IdentityHidden2 // content units
	shapes := [6][2]int{{inference.Hidden1, d.wu}, {inference.Hidden1, 1}, {inference.Hidden2, inference.Hidden1}, {inference.Hidden2, 1}, {inference.EmbeddingDim, inference.Hidden2}, {inference.EmbeddingDim, 1}}
	for s := range tr.userMask {
		for p, sh := range shapes {
			tr.userMask[s][p] = make([]bool, sh[0]*sh[1])
		}
	}
	content, personal := &tr.userMask[stageContent], &tr.userMask[stagePersonal]
	for o := 0; o < inference.Hidden1; o++ {
		for j := 0; j < d.wu; j++ {
			if o < c1 {
				content[0][o*d.wu+j] = !d.identity[j]
			} else {
				personal[0][o*d.wu+j] = d.identity[j]
			}
		}
		content[1][o] = o < c1
	}
	for o := 0; o < inference.Hidden2; o++ {
		for j := 0; j < inference.Hidden1; j++ {
			if o < c2 {
				content[2][o*inference.Hidden1+j] = j < c1
			} else {
				personal[2][o*inference.Hidden1+j] = j >= c1
			}
		}
		content[3][o] = o < c2
	}
	for o := 0; o < inference.EmbeddingDim; o++ {
		for j := 0; j < inference.Hidden2; j++ {
			content[4][o*inference.Hidden2+j] = j < c2
			personal[4][o*inference.Hidden2+j] = j >= c2 && o == inference.UserBiasIndex
		}
		content[5][o] = true
	}
}
