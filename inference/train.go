package inference

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Example is one training rating: a customer's features, a product's features and the rating
// in stars (1 to 5). It is one row of the ETL's ratings ⋈ products ⋈ customers join.
type Example struct {
	CustomerNumber int64
	User           UserFeatures
	ProductCode    string
	Item           ItemFeatures
	Rating         float64
}

// User is a customer and the features the user tower embeds.
type User struct {
	CustomerNumber int64
	Features       UserFeatures
}

// Item is a product and the features the item tower embeds.
type Item struct {
	ProductCode string
	Features    ItemFeatures
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
)

// Progress is reported once per epoch.
type Progress struct {
	Epoch, Epochs int
	// TrainLoss is the mean squared error on the scaled target in [-1, 1], over the epoch.
	TrainLoss float64
	// ValRMSE is the validation RMSE in stars after the epoch.
	ValRMSE  float64
	Duration time.Duration
}

// Metrics describes a training run; they go into the model card.
type Metrics struct {
	TrainRows      int     `json:"train_rows"`
	ValidationRows int     `json:"validation_rows"`
	BestEpoch      int     `json:"best_epoch"`
	TrainLoss      float64 `json:"train_loss"`
	// ValRMSE is the model's validation RMSE in stars, at the best epoch (the kept weights).
	ValRMSE float64 `json:"val_rmse"`
	// GlobalMeanRMSE predicts the mean training rating for every pair.
	GlobalMeanRMSE float64 `json:"baseline_global_mean_rmse"`
	// ItemMeanRMSE predicts the item's mean training rating (the global mean for an item with
	// no training rating).
	ItemMeanRMSE float64 `json:"baseline_item_mean_rmse"`
}

// TrainResult is a trained model and what is needed to publish it.
type TrainResult struct {
	Model   *Model
	Metrics Metrics
	// Users and Items are the distinct customers and products of the training data, sorted by
	// id; publishing embeds exactly these.
	Users []User
	Items []Item
}

// Train fits encoders and towers on examples. The examples are first sorted by (customer,
// product), so the input order does not matter; cfg.Seed then drives the train/validation
// split, the initial weights and the batch order, so one seed gives bit-identical weights.
// The weights of the epoch with the lowest validation RMSE are kept (the lab's best_model).
// progress, if not nil, is called after each epoch on the calling goroutine. Train returns
// ctx.Err() if ctx ends.
func Train(ctx context.Context, examples []Example, cfg TrainConfig, progress func(Progress)) (*TrainResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("train config: %w", err)
	}
	ex, users, items, err := prepare(examples)
	if err != nil {
		return nil, err
	}
	nVal := int(math.Round(cfg.ValidationShare * float64(len(ex))))
	if nVal < 1 || nVal >= len(ex) {
		return nil, fmt.Errorf("train: %d ratings are too few to hold out %g for validation", len(ex), cfg.ValidationShare)
	}

	// Encoders are fitted on all rows: they see features, never ratings.
	userCat, userNum := make([][]string, len(ex)), make([][]float64, len(ex))
	itemCat, itemNum := make([][]string, len(ex)), make([][]float64, len(ex))
	for i, e := range ex {
		userCat[i], userNum[i] = e.User.categorical(), e.User.numeric()
		itemCat[i], itemNum[i] = e.Item.categorical(), e.Item.numeric()
	}
	uohe, err := FitOneHot(UserCategorical, userCat)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	iohe, err := FitOneHot(ItemCategorical, itemCat)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	userEnc, err := newEncoder("user", uohe, FitStandard(UserNumeric, userNum), UserCategorical, UserNumeric)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	itemEnc, err := newEncoder("item", iohe, FitStandard(ItemNumeric, itemNum), ItemCategorical, ItemNumeric)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}

	// Encode each distinct user and item once; rows refer to them by index.
	uIdx := make(map[int64]int, len(users))
	uf := make([]UserFeatures, len(users))
	for i, u := range users {
		uIdx[u.CustomerNumber], uf[i] = i, u.Features
	}
	iIdx := make(map[string]int, len(items))
	itf := make([]ItemFeatures, len(items))
	for i, it := range items {
		iIdx[it.ProductCode], itf[i] = i, it.Features
	}
	tr := &trainer{
		xu: userEnc.EncodeUsers(uf), xi: itemEnc.EncodeItems(itf),
		wu: userEnc.Width(), wi: itemEnc.Width(),
		nUsers: len(users), nItems: len(items),
	}
	all := make([]row, len(ex))
	for i, e := range ex {
		all[i] = row{u: uIdx[e.CustomerNumber], i: iIdx[e.ProductCode], y: starsToScaled(e.Rating), stars: e.Rating}
	}

	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x7265637374726561)) // "recstrea"
	rng.Shuffle(len(all), func(a, b int) { all[a], all[b] = all[b], all[a] })
	val, train := all[:nVal], all[nVal:]

	tr.user, tr.item = NewTower(tr.wu), NewTower(tr.wi)
	tr.user.initUniform(rng)
	tr.item.initUniform(rng)
	tr.setup(cfg)

	m := Metrics{TrainRows: len(train), ValidationRows: len(val)}
	m.GlobalMeanRMSE, m.ItemMeanRMSE = baselines(train, val)
	m.ValRMSE = math.Inf(1)
	best := [2]*Tower{tr.user.clone(), tr.item.clone()}
	order := slices.Clone(train)
	for epoch := 1; epoch <= cfg.Epochs; epoch++ {
		start := time.Now()
		rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		var sse float64
		for b := 0; b < len(order); b += cfg.BatchSize {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			sse += tr.step(order[b:min(b+cfg.BatchSize, len(order))])
		}
		loss := sse / float64(len(order))
		rmse := tr.rmse(val)
		if rmse < m.ValRMSE {
			m.ValRMSE, m.BestEpoch, m.TrainLoss = rmse, epoch, loss
			best = [2]*Tower{tr.user.clone(), tr.item.clone()}
		}
		if progress != nil {
			progress(Progress{Epoch: epoch, Epochs: cfg.Epochs, TrainLoss: loss, ValRMSE: rmse, Duration: time.Since(start)})
		}
	}
	model, err := NewModel(best[0], best[1], userEnc, itemEnc)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	return &TrainResult{Model: model, Metrics: m, Users: users, Items: items}, nil
}

// AddItems adds the products of items that are not already in r.Items (products without any
// rating, e.g. from the products table), so that publishing embeds them too; the item tower
// only needs their features. It keeps r.Items sorted and returns how many were added.
func (r *TrainResult) AddItems(items []Item) int {
	have := make(map[string]bool, len(r.Items))
	for _, it := range r.Items {
		have[it.ProductCode] = true
	}
	added := 0
	for _, it := range items {
		if !have[it.ProductCode] {
			have[it.ProductCode] = true
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
	itemSet := map[string]ItemFeatures{}
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
	}
	items := make([]Item, 0, len(itemSet))
	for code, f := range itemSet {
		items = append(items, Item{ProductCode: code, Features: f})
	}
	slices.SortFunc(items, func(a, b Item) int { return cmp.Compare(a.ProductCode, b.ProductCode) })
	return ex, users, items, nil
}

// baselines returns the validation RMSE in stars of the global-mean and per-item-mean
// predictors fitted on train.
func baselines(train, val []row) (global, item float64) {
	var sum float64
	itemSum, itemN := map[int]float64{}, map[int]int{}
	for _, r := range train {
		sum += r.stars
		itemSum[r.i] += r.stars
		itemN[r.i]++
	}
	mean := sum / float64(len(train))
	var g, it float64
	for _, r := range val {
		g += (mean - r.stars) * (mean - r.stars)
		p := mean
		if n := itemN[r.i]; n > 0 {
			p = itemSum[r.i] / float64(n)
		}
		it += (p - r.stars) * (p - r.stars)
	}
	n := float64(len(val))
	return math.Sqrt(g / n), math.Sqrt(it / n)
}

// row is one rating: indexes into the distinct users and items, the scaled target and stars.
type row struct {
	u, i  int
	y     float32
	stars float64
}

// trainer holds the towers, the encoded inputs and the optimiser state.
type trainer struct {
	xu, xi         []float32 // encoded distinct users / items, row-major
	wu, wi         int       // input widths
	nUsers, nItems int
	user, item     *Tower

	lr, wd float32
	t      int               // Adam step
	params [][]float32       // every parameter slice, user tower then item tower
	m, v   [][]float32       // Adam moments, parallel to params
	shards [gradShards]shard // per-shard gradients and scratch
	grads  [][]float32       // summed gradients, parallel to params
}

// shard accumulates the gradients of its part of a batch.
type shard struct {
	gu, gi *Tower
	grads  [][]float32 // views of gu and gi, parallel to trainer.params
	su, si *rowState
	du, di []float32
	dz     []float32
	dh2    []float32
	dh1    []float32
	sse    float64
}

func towerSlices(t *Tower) [][]float32 {
	var s [][]float32
	for l := range t.Layers {
		s = append(s, t.Layers[l].W, t.Layers[l].B)
	}
	return s
}

func (tr *trainer) setup(cfg TrainConfig) {
	tr.lr, tr.wd = float32(cfg.LearningRate), float32(cfg.WeightDecay)
	tr.params = append(towerSlices(tr.user), towerSlices(tr.item)...)
	for _, p := range tr.params {
		tr.m = append(tr.m, make([]float32, len(p)))
		tr.v = append(tr.v, make([]float32, len(p)))
		tr.grads = append(tr.grads, make([]float32, len(p)))
	}
	for s := range tr.shards {
		sh := &tr.shards[s]
		sh.gu, sh.gi = NewTower(tr.wu), NewTower(tr.wi)
		sh.grads = append(towerSlices(sh.gu), towerSlices(sh.gi)...)
		sh.su, sh.si = newRowState(), newRowState()
		sh.du, sh.di, sh.dz = make([]float32, EmbeddingDim), make([]float32, EmbeddingDim), make([]float32, EmbeddingDim)
		sh.dh2, sh.dh1 = make([]float32, Hidden2), make([]float32, Hidden1)
	}
}

// step runs one mini-batch: forward, backward, Adam update. It returns the batch's sum of
// squared errors (scaled target) measured before the update.
func (tr *trainer) step(batch []row) float64 {
	scale := 2 / float32(len(batch)) // d(mean squared error)/d(prediction) = 2(p-y)/B
	per := (len(batch) + gradShards - 1) / gradShards
	var wg sync.WaitGroup
	for s := range tr.shards {
		lo, hi := min(s*per, len(batch)), min((s+1)*per, len(batch))
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr.shards[s].run(tr, batch[lo:hi], scale)
		}()
	}
	wg.Wait()
	var sse float64
	for p := range tr.grads {
		g := tr.grads[p]
		copy(g, tr.shards[0].grads[p])
		for s := 1; s < gradShards; s++ {
			axpy(1, tr.shards[s].grads[p], g)
		}
	}
	for s := range tr.shards {
		sse += tr.shards[s].sse
	}
	tr.adam()
	return sse
}

func (sh *shard) run(tr *trainer, rows []row, scale float32) {
	for _, g := range sh.grads {
		clear(g)
	}
	sh.sse = 0
	for _, r := range rows {
		xu := tr.xu[r.u*tr.wu : (r.u+1)*tr.wu]
		xi := tr.xi[r.i*tr.wi : (r.i+1)*tr.wi]
		tr.user.forwardRow(xu, sh.su)
		tr.item.forwardRow(xi, sh.si)
		diff := dot(sh.su.u, sh.si.u) - r.y
		sh.sse += float64(diff) * float64(diff)
		dp := scale * diff
		for o := range sh.du {
			sh.du[o] = dp * sh.si.u[o]
			sh.di[o] = dp * sh.su.u[o]
		}
		sh.backward(tr.user, sh.gu, sh.su, xu, sh.du)
		sh.backward(tr.item, sh.gi, sh.si, xi, sh.di)
	}
}

// backward adds the gradient of one row to g, given dL/du for the tower's normalised output.
func (sh *shard) backward(t, g *Tower, s *rowState, x, du []float32) {
	// u = z/n  ⇒  dz = (du - u (u·du)) / n
	c := dot(s.u, du)
	for o := range sh.dz {
		sh.dz[o] = (du[o] - s.u[o]*c) / s.n
	}
	d2, g2 := &t.Layers[2], &g.Layers[2]
	clear(sh.dh2)
	for o, d := range sh.dz {
		if d == 0 {
			continue
		}
		axpy(d, s.h2, g2.W[o*d2.In:(o+1)*d2.In])
		g2.B[o] += d
		axpy(d, d2.W[o*d2.In:(o+1)*d2.In], sh.dh2)
	}
	for i, h := range s.h2 {
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
		axpy(d, s.h1, g1.W[o*d1.In:(o+1)*d1.In])
		g1.B[o] += d
		axpy(d, d1.W[o*d1.In:(o+1)*d1.In], sh.dh1)
	}
	g0 := &g.Layers[0]
	in := g0.In
	for o, d := range sh.dh1 {
		if d == 0 || s.h1[o] <= 0 {
			continue
		}
		g0.B[o] += d
		w := g0.W[o*in : (o+1)*in]
		for _, j := range s.nz {
			w[j] += d * x[j]
		}
	}
}

// adam applies one Adam update (with L2 weight decay added to the gradient, like
// torch.optim.Adam's weight_decay) to every parameter.
func (tr *trainer) adam() {
	tr.t++
	bc1 := float32(1 - math.Pow(adamBeta1, float64(tr.t)))
	bc2 := float32(1 - math.Pow(adamBeta2, float64(tr.t)))
	for p, param := range tr.params {
		g, m, v := tr.grads[p], tr.m[p], tr.v[p]
		for i := range param {
			gi := g[i] + tr.wd*param[i]
			m[i] = adamBeta1*m[i] + (1-adamBeta1)*gi
			v[i] = adamBeta2*v[i] + (1-adamBeta2)*gi*gi
			mh := m[i] / bc1
			vh := v[i] / bc2
			param[i] -= tr.lr * mh / (float32(math.Sqrt(float64(vh))) + adamEps)
		}
	}
}

// rmse is the validation RMSE in stars with the current weights.
func (tr *trainer) rmse(val []row) float64 {
	eu := tr.user.Forward(tr.xu, tr.nUsers)
	ei := tr.item.Forward(tr.xi, tr.nItems)
	var se float64
	for _, r := range val {
		p := scaledToStars(dot(eu[r.u*EmbeddingDim:(r.u+1)*EmbeddingDim], ei[r.i*EmbeddingDim:(r.i+1)*EmbeddingDim]))
		se += (p - r.stars) * (p - r.stars)
	}
	return math.Sqrt(se / float64(len(val)))
}
