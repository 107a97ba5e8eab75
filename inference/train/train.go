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

// Progress is reported once per epoch.
type Progress struct {
	// Phase is the fit the epoch belongs to: PhaseWarm and PhaseCold (the evaluation fits) or
	// PhaseFinal (the published model). Stage is StageContent or StagePersonal.
	Phase, Stage  string
	Epoch, Epochs int
	// TrainLoss is the mean squared error on the scaled target in [-1, 1], over the epoch.
	TrainLoss float64
	// StopRMSE is the RMSE in stars on the stage's early-stopping ratings after the epoch (NaN
	// in the personal stage, which has none).
	StopRMSE float64
	Duration time.Duration
	// Done marks the stage's last epoch; then BestEpoch and BestRMSE describe the kept weights
	// (the personal stage keeps its last epoch; BestRMSE is NaN).
	Done      bool
	BestEpoch int
	BestRMSE  float64
}

// Phases of a training run, in order, and the two stages of every fit.
const (
	PhaseWarm     = "warm"
	PhaseCold     = "cold"
	PhaseFinal    = "final"
	StageContent  = "content"
	StagePersonal = "personal"
)

// TrainResult is a trained model and what is needed to publish it.
type TrainResult struct {
	Model   *inference.Model
	Metrics inference.Metrics
	// Users and Items are the distinct customers and products of the training data, sorted by
	// id; publishing embeds exactly these.
	Users []User
	Items []Item
}

// Train fits encoders and towers on examples and evaluates the training procedure. The
// examples are first sorted by (customer, product), so the input order does not matter;
// cfg.Seed then drives the splits, the initial weights and the batch order, so one seed gives
// bit-identical weights and figures.
//
// A run does three fits with the same procedure (fit): on a warm split (cfg.ValidationShare of
// the ratings held out) and on a cold split (that share of the customers held out with all
// their ratings), each scored on its held-out part the way the worker would score it (encoders
// fitted on the fit's own ratings, embeddings from the model) against baselines; then the
// published model on all ratings. progress, if not nil, is called after each epoch on the
// calling goroutine. Train returns ctx.Err() if ctx ends.
func Train(ctx context.Context, examples []Example, cfg inference.TrainConfig, progress func(Progress)) (*TrainResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("train config: %w", err)
	}
	ex, users, items, err := prepare(examples)
	if err != nil {
		return nil, err
	}
	warmTrain, warmTest, err := warmSplit(ex, cfg)
	if err != nil {
		return nil, err
	}
	coldTrain, coldTest, err := coldSplit(ex, users, cfg)
	if err != nil {
		return nil, err
	}
	report := func(phase string) func(Progress) {
		if progress == nil {
			return nil
		}
		return func(p Progress) { p.Phase = phase; progress(p) }
	}
	var m inference.Metrics
	for _, ev := range []struct {
		phase       string
		train, test []Example
		dst         *inference.Evaluation
	}{
		{PhaseWarm, warmTrain, warmTest, &m.Warm},
		{PhaseCold, coldTrain, coldTest, &m.Cold},
	} {
		model, f, err := fitExamples(ctx, ev.train, cfg, ev.phase, report(ev.phase))
		if err != nil {
			return nil, err
		}
		*ev.dst = evaluate(model, ev.train, ev.test, ev.phase == PhaseWarm)
		ev.dst.Split, ev.dst.ContentEpoch, ev.dst.PersonalEpochs = ev.phase, f.content.best, f.personal.epochs
	}
	model, f, err := fitExamples(ctx, ex, cfg, PhaseFinal, report(PhaseFinal))
	if err != nil {
		return nil, err
	}
	m.Rows, m.TrainRows, m.EarlyStoppingRows = len(ex), f.trainRows, len(ex)-f.trainRows
	m.ContentEpoch, m.ContentRMSE = f.content.best, f.content.rmse
	m.PersonalEpochs, m.PersonalLoss = f.personal.epochs, f.personal.loss
	return &TrainResult{Model: model, Metrics: m, Users: users, Items: items}, nil
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

// prepare validates the examples, sorts them and extracts the distinct users and items. A
// customer's (or product's) features are taken from its first row in (customer, product) order.
func prepare(examples []Example) ([]Example, []User, []Item, error) {
	if len(examples) == 0 {
		return nil, nil, nil, fmt.Errorf("train: no ratings")
	}
	ex := slices.Clone(examples)
	slices.SortFunc(ex, func(a, b Example) int {
		return cmp.Or(cmp.Compare(a.CustomerNumber, b.CustomerNumber), cmp.Compare(a.ProductCode, b.ProductCode))
	})
	var users []User
	itemSet := map[string]inference.ItemFeatures{}
	itemN := map[string]int{}
	for i, e := range ex {
		if i > 0 && e.CustomerNumber == ex[i-1].CustomerNumber && e.ProductCode == ex[i-1].ProductCode {
			return nil, nil, nil, fmt.Errorf("train: customer %d rated product %s twice", e.CustomerNumber, e.ProductCode)
		}
		if !(e.Rating >= 1 && e.Rating <= 5) {
			return nil, nil, nil, fmt.Errorf("train: customer %d product %s: rating %g is outside [1, 5]", e.CustomerNumber, e.ProductCode, e.Rating)
		}
		if e.ProductCode == "" {
			return nil, nil, nil, fmt.Errorf("train: customer %d: empty product code", e.CustomerNumber)
		}
		for name, v := range map[string]float64{"creditLimit": e.User.CreditLimit, "quantityInStock": e.Item.QuantityInStock, "buyPrice": e.Item.BuyPrice, "MSRP": e.Item.MSRP} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, nil, nil, fmt.Errorf("train: customer %d product %s: %s is not a finite number", e.CustomerNumber, e.ProductCode, name)
			}
		}
		if len(users) == 0 || users[len(users)-1].CustomerNumber != e.CustomerNumber {
			users = append(users, User{CustomerNumber: e.CustomerNumber, Features: e.User})
		}
		if _, ok := itemSet[e.ProductCode]; !ok {
			itemSet[e.ProductCode] = e.Item
		}
		itemN[e.ProductCode]++
	}
	items := make([]Item, 0, len(itemSet))
	for code, f := range itemSet {
		items = append(items, Item{ProductCode: code, Features: f, Ratings: itemN[code]})
	}
	slices.SortFunc(items, func(a, b Item) int { return cmp.Compare(a.ProductCode, b.ProductCode) })
	return ex, users, items, nil
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

// warmSplit holds out cfg.ValidationShare of the ratings (seeded).
func warmSplit(ex []Example, cfg inference.TrainConfig) (train, test []Example, err error) {
	n := int(math.Round(cfg.ValidationShare * float64(len(ex))))
	if n < 1 || len(ex)-n < 2 {
		return nil, nil, fmt.Errorf("train: %d ratings are too few to hold out %g of them for the warm evaluation", len(ex), cfg.ValidationShare)
	}
	all := slices.Clone(ex)
	seeded(cfg.Seed, streamWarm).Shuffle(len(all), func(a, b int) { all[a], all[b] = all[b], all[a] })
	test, train = all[:n], all[n:]
	byKey := func(a, b Example) int {
		return cmp.Or(cmp.Compare(a.CustomerNumber, b.CustomerNumber), cmp.Compare(a.ProductCode, b.ProductCode))
	}
	slices.SortFunc(train, byKey)
	slices.SortFunc(test, byKey)
	return train, test, nil
}

// coldSplit holds out cfg.ValidationShare of the customers (seeded) with all their ratings.
func coldSplit(ex []Example, users []User, cfg inference.TrainConfig) (train, test []Example, err error) {
	n := int(math.Round(cfg.ValidationShare * float64(len(users))))
	if n < 1 || len(users)-n < 1 {
		return nil, nil, fmt.Errorf("train: %d customers are too few to hold out %g of them for the cold evaluation", len(users), cfg.ValidationShare)
	}
	held := map[int64]bool{}
	for _, u := range seeded(cfg.Seed, streamCold).Perm(len(users))[:n] {
		held[users[u].CustomerNumber] = true
	}
	for _, e := range ex {
		if held[e.CustomerNumber] {
			test = append(test, e)
		} else {
			train = append(train, e)
		}
	}
	if len(train) < 2 {
		return nil, nil, fmt.Errorf("train: too few ratings outside the %d held-out customers for the cold evaluation", n)
	}
	return train, test, nil
}

// row is one rating: indexes into the distinct users and items, the scaled target and stars.
type row struct {
	u, i  int
	y     float32
	stars float64
}

// dataset is one fit's encoded training data: the encoders fitted on its ratings, every
// distinct user and item encoded once, and the ratings as rows of indexes.
type dataset struct {
	userEnc, itemEnc inference.Encoder
	xu, xi           []float32 // encoded distinct users / items, row-major
	wu, wi           int       // input widths
	nUsers, nItems   int
	rows             []row // sorted by (customer, product)
	// identity marks the user input columns of the credit-limit category (see fit).
	identity []bool
}

// newDataset fits the encoders on ex (sorted by customer and product; the encoders see
// features, never ratings) and encodes it.
func newDataset(ex []Example) (*dataset, error) {
	userCat, userNum := make([][]string, len(ex)), make([][]float64, len(ex))
	itemCat, itemNum := make([][]string, len(ex)), make([][]float64, len(ex))
	for i, e := range ex {
		userCat[i], userNum[i] = e.User.Categorical(), e.User.Numeric()
		itemCat[i], itemNum[i] = e.Item.Categorical(), e.Item.Numeric()
	}
	uohe, err := inference.FitOneHot(inference.UserCategorical, userCat)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if err := uohe.CapCategories(slices.Index(inference.UserCategorical, inference.ProfileFeature), userCat, MaxProfiles); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	iohe, err := inference.FitOneHot(inference.ItemCategorical, itemCat)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	userEnc, err := inference.NewEncoder("user", uohe, inference.FitStandard(inference.UserNumeric, userNum), inference.UserCategorical, inference.UserNumeric)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	itemEnc, err := inference.NewEncoder("item", iohe, inference.FitStandard(inference.ItemNumeric, itemNum), inference.ItemCategorical, inference.ItemNumeric)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	uIdx, iIdx := map[int64]int{}, map[string]int{}
	var uf []inference.UserFeatures
	var itf []inference.ItemFeatures
	var items []string
	for _, e := range ex {
		if _, ok := uIdx[e.CustomerNumber]; !ok {
			uIdx[e.CustomerNumber] = len(uf)
			uf = append(uf, e.User)
		}
		if _, ok := iIdx[e.ProductCode]; !ok {
			iIdx[e.ProductCode] = -1
			items = append(items, e.ProductCode)
		}
	}
	slices.Sort(items)
	itemFeat := map[string]inference.ItemFeatures{}
	for _, e := range ex {
		if _, ok := itemFeat[e.ProductCode]; !ok {
			itemFeat[e.ProductCode] = e.Item
		}
	}
	for i, code := range items {
		iIdx[code] = i
		itf = append(itf, itemFeat[code])
	}
	d := &dataset{
		userEnc: userEnc, itemEnc: itemEnc,
		xu: userEnc.EncodeUsers(uf), xi: itemEnc.EncodeItems(itf),
		wu: userEnc.Width(), wi: itemEnc.Width(),
		nUsers: len(uf), nItems: len(itf),
		rows: make([]row, len(ex)), identity: make([]bool, userEnc.Width()),
	}
	for i, e := range ex {
		d.rows[i] = row{u: uIdx[e.CustomerNumber], i: iIdx[e.ProductCode], y: starsToScaled(e.Rating), stars: e.Rating}
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

// fitExamples fits a model on ex (sorted by customer and product).
func fitExamples(ctx context.Context, ex []Example, cfg inference.TrainConfig, phase string, progress func(Progress)) (*inference.Model, *fitted, error) {
	d, err := newDataset(ex)
	if err != nil {
		return nil, nil, err
	}
	f, err := d.fit(ctx, cfg, phase, progress)
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
}

// stageResult describes one stage: the kept epoch, how many ran, its loss and stop RMSE.
type stageResult struct {
	best, epochs int
	loss, rmse   float64
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
// trainer.gradients) and L2 weight decay, with Adam.
func (d *dataset) fit(ctx context.Context, cfg inference.TrainConfig, phase string, progress func(Progress)) (*fitted, error) {
	rng := seeded(cfg.Seed, phaseStream(phase))
	// Hold out customers for the content stage (when there are at least two), then ratings.
	seen := make([]bool, d.nUsers)
	var cust []int
	for _, r := range d.rows {
		if !seen[r.u] {
			seen[r.u] = true
			cust = append(cust, r.u)
		}
	}
	held := make([]bool, d.nUsers)
	if len(cust) >= 2 {
		n := min(max(1, int(math.Round(earlyStoppingShare*float64(len(cust))))), len(cust)-1)
		perm := rng.Perm(len(cust))
		for _, k := range perm[:n] {
			held[cust[k]] = true
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
	}
	if len(train) == 0 {
		return nil, fmt.Errorf("train: %d ratings are too few to fit", len(d.rows))
	}

	tr := newTrainer(d, cfg)
	tr.user.InitUniform(rng)
	tr.item.InitUniform(rng)
	// The zeros of the block structure; the identity sub-network's readout starts at zero, so
	// the personal stage starts from the content model.
	for p, param := range towerSlices(tr.user) {
		for i := range param {
			if !tr.userMask[stageContent][p][i] && !(p != 4 && tr.userMask[stagePersonal][p][i]) {
				param[i] = 0
			}
		}
	}
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

	f := &fitted{trainRows: len(train)}
	var err error
	tr.begin(stageContent, train)
	if f.content, err = tr.run(ctx, train, stop, cfg, StageContent, rng, progress); err != nil {
		return nil, err
	}
	tr.begin(stagePersonal, d.rows)
	if f.personal, err = tr.run(ctx, d.rows, nil, cfg, StagePersonal, rng, progress); err != nil {
		return nil, err
	}
	f.user, f.item = tr.user, tr.item
	return f, nil
}

// run trains the current stage for at most cfg.Epochs epochs.
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
func (tr *trainer) run(ctx context.Context, train, stop []row, cfg inference.TrainConfig, name string, rng *rand.Rand, progress func(Progress)) (stageResult, error) {
	d := tr.d
	var bestErr []float64
	res := stageResult{rmse: math.Inf(1), loss: math.Inf(1)}
	if stop != nil {
		bestErr = d.sqErrors(tr.user, tr.item, stop)
		res.rmse = rmsOf(bestErr)
	}
	best := [2]*inference.Tower{tr.user.Clone(), tr.item.Clone()}
	order := slices.Clone(train)
	for epoch := 1; epoch <= cfg.Epochs; epoch++ {
		start := time.Now()
		rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		var sse float64
		for b := 0; b < len(order); b += cfg.BatchSize {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			sse += tr.step(order[b:min(b+cfg.BatchSize, len(order))])
		}
		loss := sse / float64(len(order))
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
		done := epoch == cfg.Epochs || epoch-res.best >= cfg.Patience
		if progress != nil {
			p := Progress{Stage: name, Epoch: epoch, Epochs: cfg.Epochs, TrainLoss: loss, StopRMSE: rmse, Duration: time.Since(start), Done: done, BestEpoch: res.best, BestRMSE: res.rmse}
			if stop == nil {
				p.BestEpoch, p.BestRMSE = epoch, math.NaN()
			}
			progress(p)
		}
		if done {
			break
		}
	}
	if stop != nil {
		tr.user, tr.item = best[0], best[1]
		tr.rebind()
	} else {
		res.best = res.epochs
	}
	return res, nil
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
		out[k] = (p - r.stars) * (p - r.stars)
	}
	return out
}

// embedUsed returns the embeddings of the users and items rows refer to (nil for the others).
func (d *dataset) embedUsed(user, item *inference.Tower, rows []row) (ue, ie [][]float32) {
	ue, ie = make([][]float32, d.nUsers), make([][]float32, d.nItems)
	var us, is []int
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
	gather := func(x []float32, w int, idx []int) []float32 {
		out := make([]float32, 0, len(idx)*w)
		for _, k := range idx {
			out = append(out, x[k*w:(k+1)*w]...)
		}
		return out
	}
	eu := user.Embed(gather(d.xu, d.wu, us), len(us), inference.HeadBias, inference.UserSide)
	ei := item.Embed(gather(d.xi, d.wi, is), len(is), inference.HeadBias, inference.ItemSide)
	for n, k := range us {
		ue[k] = eu[n*inference.EmbeddingDim : (n+1)*inference.EmbeddingDim]
	}
	for n, k := range is {
		ie[k] = ei[n*inference.EmbeddingDim : (n+1)*inference.EmbeddingDim]
	}
	return ue, ie
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

	// Per-step scratch: the batch's distinct users and items, their states and the loss
	// gradients with respect to their embeddings.
	uSlot, iSlot   []int // slot of a user / item in the batch, -1 if absent
	uCount, iCount []int // rows of a slot in the batch
	uList, iList   []int
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
		all := make([]row, 0, max(d.nUsers, d.nItems))
		for k := 0; k < max(d.nUsers, d.nItems); k++ {
			all = append(all, row{u: k % d.nUsers, i: k % d.nItems})
		}
		ue, ie := d.embedUsed(tr.user, tr.item, all)
		tr.anchor = make([][]float32, d.nUsers)
		for u := range ue {
			tr.anchor[u] = slices.Clone(ue[u])
		}
		tr.itemEmb = ie
	}
}

// step runs one mini-batch (gradients, then an Adam update) and returns the batch's sum of
// squared errors (scaled target) measured before the update.
func (tr *trainer) step(batch []row) float64 {
	sse := tr.gradients(batch)
	tr.adam()
	return sse
}

// gradients computes tr.grads, the gradient of the batch's loss: the mean over the batch of
// the squared error of the scaled rating plus, per rating, the penalties
//
//	(bias_penalty/n_u)·(b_u − a_u)² + (embedding_penalty/n_u)·|f_u − g_u|²
//	(bias_penalty/n_i)·(c·d_i)² + (embedding_penalty/n_i)·|g_i|²          (content stage)
//
// where n_u, n_i are the user's and item's training ratings, so that an epoch adds each
// penalty once per user and per item whatever its number of ratings: the user bias b_u is
// shrunk toward a_u like the shrunk per-user mean (k = bias_penalty). In the content stage
// a_u is the mean rating and the anchor of f_u is 0; in the personal stage both are the
// content stage's embedding of the user, so a customer's own effect is shrunk toward what
// the content model predicts for them. Every distinct user and item of the batch goes through
// its tower once, the batch's gradients are summed per user and item, then each is
// back-propagated once. It returns the batch's sum of squared errors.
func (tr *trainer) gradients(batch []row) float64 {
	d := tr.d
	personal := tr.stage == stagePersonal
	tr.uList, tr.iList = tr.uList[:0], tr.iList[:0]
	for _, r := range batch {
		if tr.uSlot[r.u] < 0 {
			tr.uSlot[r.u] = len(tr.uList)
			tr.uList = append(tr.uList, r.u)
		}
		if !personal && tr.iSlot[r.i] < 0 {
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
	tr.du = grow(tr.du, nu*inference.EmbeddingDim)
	tr.dv = grow(tr.dv, ni*inference.EmbeddingDim)
	tr.uCount = grow(tr.uCount, nu)
	tr.iCount = grow(tr.iCount, ni)

	// Forward, split by slot ranges.
	tr.parallel(func(s int) {
		for k := s * nu / gradShards; k < (s+1)*nu/gradShards; k++ {
			st, u := tr.uState[k], tr.uList[k]
			tr.user.ForwardRow(d.xu[u*d.wu:(u+1)*d.wu], st)
			inference.HeadBias.Apply(inference.UserSide, st)
		}
		for k := s * ni / gradShards; k < (s+1)*ni/gradShards; k++ {
			st, i := tr.iState[k], tr.iList[k]
			tr.item.ForwardRow(d.xi[i*d.wi:(i+1)*d.wi], st)
			inference.HeadBias.Apply(inference.ItemSide, st)
		}
	})

	// Loss: d(mean squared error)/d(score) = 2(p-y)/B, summed into each embedding's gradient
	// in batch order.
	scale := 2 / float32(len(batch))
	var sse float64
	for _, r := range batch {
		ku := tr.uSlot[r.u]
		u := tr.uState[ku].U
		var v []float32
		ki := -1
		if personal {
			v = tr.itemEmb[r.i]
		} else {
			ki = tr.iSlot[r.i]
			v = tr.iState[ki].U
		}
		diff := inference.Dot(u, v) - r.y
		sse += float64(diff) * float64(diff)
		dp := scale * diff
		axpy(dp, v, tr.du[ku*inference.EmbeddingDim:(ku+1)*inference.EmbeddingDim])
		tr.uCount[ku]++
		if ki >= 0 {
			axpy(dp, u, tr.dv[ki*inference.EmbeddingDim:(ki+1)*inference.EmbeddingDim])
			tr.iCount[ki]++
		}
	}
	for k, u := range tr.uList {
		w := scale * float32(tr.uCount[k]) / float32(tr.nu[u])
		e, g := tr.uState[k].U, tr.du[k*inference.EmbeddingDim:(k+1)*inference.EmbeddingDim]
		if personal {
			a := tr.anchor[u]
			for o := 0; o < inference.InteractionDim; o++ {
				g[o] += w * tr.embedPenalty * (e[o] - a[o])
			}
			g[inference.UserBiasIndex] += w * tr.biasPenalty * (e[inference.UserBiasIndex] - a[inference.UserBiasIndex])
			continue
		}
		axpy(w*tr.embedPenalty, e[:inference.InteractionDim], g[:inference.InteractionDim])
		g[inference.UserBiasIndex] += w * tr.biasPenalty * (e[inference.UserBiasIndex] - tr.mean)
	}
	for k, i := range tr.iList {
		w := scale * float32(tr.iCount[k]) / float32(tr.ni[i])
		e, g := tr.iState[k].U, tr.dv[k*inference.EmbeddingDim:(k+1)*inference.EmbeddingDim]
		axpy(w*tr.embedPenalty, e[:inference.InteractionDim], g[:inference.InteractionDim])
		g[inference.ItemBiasIndex] += w * tr.biasPenalty * inference.ItemBiasWeight * inference.ItemBiasWeight * e[inference.ItemBiasIndex]
	}

	// Backward, split by slot ranges; each shard sums into its own gradients.
	tr.parallel(func(s int) {
		sh := &tr.shards[s]
		for _, g := range sh.grads {
			clear(g)
		}
		for k := s * nu / gradShards; k < (s+1)*nu/gradShards; k++ {
			st, u := tr.uState[k], tr.uList[k]
			headBackward(inference.UserSide, st, tr.du[k*inference.EmbeddingDim:(k+1)*inference.EmbeddingDim], sh.dz)
			sh.backward(tr.user, sh.gu, st, d.xu[u*d.wu:(u+1)*d.wu])
		}
		for k := s * ni / gradShards; k < (s+1)*ni/gradShards; k++ {
			st, i := tr.iState[k], tr.iList[k]
			headBackward(inference.ItemSide, st, tr.dv[k*inference.EmbeddingDim:(k+1)*inference.EmbeddingDim], sh.dz)
			sh.backward(tr.item, sh.gi, st, d.xi[i*d.wi:(i+1)*d.wi])
		}
	})
	for p := range tr.grads {
		if personal && p >= 6 { // the item tower is fixed
			continue
		}
		g := tr.grads[p]
		copy(g, tr.shards[0].grads[p])
		for s := 1; s < gradShards; s++ {
			axpy(1, tr.shards[s].grads[p], g)
		}
	}
	for _, u := range tr.uList {
		tr.uSlot[u] = -1
	}
	for _, i := range tr.iList {
		tr.iSlot[i] = -1
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
func (tr *trainer) parallel(fn func(s int)) {
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

// backward adds the gradient of one row to g, given sh.dz = dL/dz for the tower's raw output.
// (adam updates only what the stage trains.)
func (sh *shard) backward(t, g *inference.Tower, s *inference.RowState, x []float32) {
	d2, g2 := &t.Layers[2], &g.Layers[2]
	clear(sh.dh2)
	for o, d := range sh.dz {
		if d == 0 {
			continue
		}
		axpy(d, s.H2, g2.W[o*d2.In:(o+1)*d2.In])
		g2.B[o] += d
		axpy(d, d2.W[o*d2.In:(o+1)*d2.In], sh.dh2)
	}
	for i, h := range s.H2 {
		if h <= 0 {
			sh.dh2[i] = 0
		}
	}
	d1, g1 := &t.Layers[1], &g.Layers[1]
	clear(sh.dh1)
	for o, d := range sh.dh2 {
		if d == 0 {
			continue
		}
		axpy(d, s.H1, g1.W[o*d1.In:(o+1)*d1.In])
		g1.B[o] += d
		axpy(d, d1.W[o*d1.In:(o+1)*d1.In], sh.dh1)
	}
	g0 := &g.Layers[0]
	in := g0.In
	for o, d := range sh.dh1 {
		if d == 0 || s.H1[o] <= 0 {
			continue
		}
		g0.B[o] += d
		w := g0.W[o*in : (o+1)*in]
		for _, j := range s.NZ {
			w[j] += d * x[j]
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
