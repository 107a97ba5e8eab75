package train

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/recstream/recstream/inference"
)

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
