package train

import (
	"slices"

	"github.com/recstream/recstream/inference"
)

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
