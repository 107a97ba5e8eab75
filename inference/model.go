package inference

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
)

// Tower shape: Dense(Hidden1, ReLU) → Dense(Hidden2, ReLU) → Dense(EmbeddingDim). Both towers
// have it; only the input width differs. A head (below) turns the raw output into the served
// embedding.
const (
	Hidden1      = 256
	Hidden2      = 128
	EmbeddingDim = 32
)

// The bias head (HeadBias). A rating is predicted as
//
//	score = f(user)·g(item) + b(user) + c·d(item)        stars = clamp(2·score + 3, 1, 5)
//
// where f and g are the first InteractionDim raw outputs of the towers, b(user) is a learned
// user bias (it also carries the global mean), d(item) a learned item bias, and c = ItemBiasWeight
// a constant. Both biases are folded into the one inner product that pgvector computes:
//
//	user embedding u = [f…, b, c]   (f and b scaled together onto the ball of radius √(1−c²) when larger, so |u| ≤ 1)
//	item embedding v = [g…, 1, d]
//
// so u·v is exactly the score, and ranking items by inner product (items_from_user) ranks them
// by g·f + c·d: the user bias is the same for every item. The user tower's output UserBiasIndex
// is b; its output ItemBiasIndex is unused (zero weights). The item tower's output
// ItemBiasIndex is d; its output UserBiasIndex is unused (zero weights).
const (
	InteractionDim = EmbeddingDim - 2
	UserBiasIndex  = EmbeddingDim - 2
	ItemBiasIndex  = EmbeddingDim - 1
	ItemBiasWeight = 0.5
)

// The user tower holds two sub-networks in one Sequential: the last IdentityHidden1 units of
// the first hidden layer read only the credit-limit category (the identity block of the input,
// see UserCategorical) and feed only the last IdentityHidden2 units of the second, which feed
// the output; every other unit reads only the other inputs. Weights between the two are zero,
// and the identity units' biases are zero, so a customer whose credit-limit category the model
// does not know (an all-zero identity block) gets exactly the content sub-network's output. The
// tensors keep the plain Dense shapes (the zeros are stored).
const (
	IdentityHidden1 = 64
	IdentityHidden2 = 32
)

// userRadius is the bound on |(f, b)| of a user embedding: with the constant c the user
// embedding has length at most 1.
var userRadius = math.Sqrt(1 - ItemBiasWeight*ItemBiasWeight)

// Head names how raw tower outputs become embeddings; the model card records it.
type Head string

const (
	// HeadUnit is the head of versions published before the bias head: both towers' outputs
	// L2-normalised, score = cosine in [-1, 1]. Loading such a version still works; a card
	// without a head means this one.
	HeadUnit Head = "l2-normalised"
	// HeadBias is the bias head described above; `recstream train` publishes it.
	HeadBias Head = "bias-folded"
)

// normEps guards the L2 normalisation of an all-zero output (PyTorch's F.normalize eps).
const normEps = 1e-12

// Dense is one fully connected layer, y = W x + b, with W stored row-major as [Out][In] (the
// PyTorch nn.Linear layout, so a state_dict tensor can be copied in unchanged).
type Dense struct {
	In, Out int
	W       []float32 // len Out*In
	B       []float32 // len Out
}

func newDense(in, out int) Dense {
	return Dense{In: in, Out: out, W: make([]float32, in*out), B: make([]float32, out)}
}

// Tower is one side of the two-tower model: three Dense layers with ReLU between them.
// Layers[0], [1], [2] are PyTorch Sequential indices 0, 2 and 4 (1 and 3 are the ReLUs).
type Tower struct {
	Layers [3]Dense
}

// NewTower returns a zero tower for inputs of width in.
func NewTower(in int) *Tower {
	return &Tower{Layers: [3]Dense{newDense(in, Hidden1), newDense(Hidden1, Hidden2), newDense(Hidden2, EmbeddingDim)}}
}

// InputWidth is the width of the tower's input rows.
func (t *Tower) InputWidth() int { return t.Layers[0].In }

// initUniform fills the tower like PyTorch's nn.Linear default: weights and biases drawn from
// U(-1/sqrt(in), 1/sqrt(in)), in a fixed order so one seed gives one model.
func (t *Tower) initUniform(rng *rand.Rand) {
	for l := range t.Layers {
		d := &t.Layers[l]
		bound := 1 / math.Sqrt(float64(d.In))
		for i := range d.W {
			d.W[i] = float32((rng.Float64()*2 - 1) * bound)
		}
		for i := range d.B {
			d.B[i] = float32((rng.Float64()*2 - 1) * bound)
		}
	}
}

// zeroOutput clears output o of the last layer (weights and bias).
func (t *Tower) zeroOutput(o int) {
	d := &t.Layers[2]
	clear(d.W[o*d.In : (o+1)*d.In])
	d.B[o] = 0
}

// clone returns a deep copy.
func (t *Tower) clone() *Tower {
	c := &Tower{}
	for l, d := range t.Layers {
		c.Layers[l] = Dense{In: d.In, Out: d.Out, W: append([]float32(nil), d.W...), B: append([]float32(nil), d.B...)}
	}
	return c
}

// rowState holds one row's activations for the backward pass.
type rowState struct {
	nz []int     // indices of the input's non-zero entries
	h1 []float32 // after ReLU, Hidden1
	h2 []float32 // after ReLU, Hidden2
	z  []float32 // raw output, EmbeddingDim
	u  []float32 // embedding (after the head), EmbeddingDim
	n  float64   // the head's norm: |z| (unit head) or |(f, b)| (user bias head)
}

func newRowState() *rowState {
	return &rowState{h1: make([]float32, Hidden1), h2: make([]float32, Hidden2), z: make([]float32, EmbeddingDim), u: make([]float32, EmbeddingDim)}
}

// forwardRow runs one input row through the tower, filling s.nz, s.h1, s.h2 and s.z (the raw
// output). The first layer visits only the input's non-zero entries: the one-hot blocks make it
// sparse.
func (t *Tower) forwardRow(x []float32, s *rowState) {
	s.nz = s.nz[:0]
	for j, v := range x {
		if v != 0 {
			s.nz = append(s.nz, j)
		}
	}
	d0 := &t.Layers[0]
	for o := 0; o < d0.Out; o++ {
		w := d0.W[o*d0.In : (o+1)*d0.In]
		acc := d0.B[o]
		for _, j := range s.nz {
			acc += w[j] * x[j]
		}
		s.h1[o] = max(acc, 0)
	}
	d1 := &t.Layers[1]
	for o := 0; o < d1.Out; o++ {
		s.h2[o] = max(d1.B[o]+dot(d1.W[o*d1.In:(o+1)*d1.In], s.h1), 0)
	}
	d2 := &t.Layers[2]
	for o := 0; o < d2.Out; o++ {
		s.z[o] = d2.B[o] + dot(d2.W[o*d2.In:(o+1)*d2.In], s.h2)
	}
}

// side says which tower a head is applied to.
type side int

const (
	userSide side = iota
	itemSide
)

// apply turns s.z into the embedding s.u. Norms are taken in float64: a float32 sum of squares
// overflows for activations above ~1e19, and Inf/Inf would make a NaN embedding; so any finite
// raw output gives a finite embedding.
func (h Head) apply(sd side, s *rowState) {
	switch {
	case h == HeadBias && sd == userSide:
		var ss float64
		for _, v := range s.z[:UserBiasIndex+1] {
			ss += float64(v) * float64(v)
		}
		s.n = math.Sqrt(ss)
		if s.n > userRadius {
			k := userRadius / s.n
			for o, v := range s.z[:UserBiasIndex+1] {
				s.u[o] = float32(float64(v) * k)
			}
		} else {
			copy(s.u, s.z[:UserBiasIndex+1])
		}
		s.u[ItemBiasIndex] = ItemBiasWeight
	case h == HeadBias: // item
		copy(s.u, s.z)
		s.u[UserBiasIndex] = 1
	default: // HeadUnit
		var ss float64
		for _, v := range s.z {
			ss += float64(v) * float64(v)
		}
		s.n = max(math.Sqrt(ss), normEps)
		for o, v := range s.z {
			s.u[o] = float32(float64(v) / s.n)
		}
	}
}

// backward turns dL/du (the embedding's gradient) into dL/dz (the raw output's) for the bias
// head, the only one that is trained.
func (h Head) backward(sd side, s *rowState, du, dz []float32) {
	if sd == itemSide {
		copy(dz, du)
		dz[UserBiasIndex] = 0 // the constant 1
		return
	}
	dz[ItemBiasIndex] = 0 // the constant c
	w, g := s.z[:UserBiasIndex+1], du[:UserBiasIndex+1]
	if s.n <= userRadius {
		copy(dz, g)
		return
	}
	// u = r·w/|w|  ⇒  dw = r/|w| · (du − ŵ (ŵ·du)), ŵ = w/|w|
	var c float64
	for o := range w {
		c += float64(w[o]) * float64(g[o])
	}
	c /= s.n * s.n
	k := userRadius / s.n
	for o := range w {
		dz[o] = float32(k * (float64(g[o]) - float64(w[o])*c))
	}
}

// embed runs n input rows (x holds n rows of InputWidth values) through the tower and the head
// and returns n rows of EmbeddingDim values. It is pure computation, safe for concurrent use on
// a tower that is not being trained.
func (t *Tower) embed(x []float32, n int, h Head, sd side) []float32 {
	in := t.InputWidth()
	if len(x) != n*in {
		panic(fmt.Sprintf("inference: Tower.embed: %d values for %d rows of width %d", len(x), n, in)) // programming error
	}
	out := make([]float32, n*EmbeddingDim)
	// Rows are independent, so a large batch is split across cores; each row's arithmetic is
	// the same either way, so the result does not depend on the split.
	workers := min(runtime.GOMAXPROCS(0), n/minRowsPerWorker)
	if workers <= 1 {
		t.embedRows(x, out, 0, n, h, sd)
		return out
	}
	var wg sync.WaitGroup
	per := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += per {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			t.embedRows(x, out, lo, hi, h, sd)
		}(lo, min(lo+per, n))
	}
	wg.Wait()
	return out
}

// Forward returns the L2-normalised outputs of n input rows (the HeadUnit embedding).
func (t *Tower) Forward(x []float32, n int) []float32 { return t.embed(x, n, HeadUnit, userSide) }

// minRowsPerWorker is the smallest share of a batch worth a goroutine.
const minRowsPerWorker = 32

func (t *Tower) embedRows(x, out []float32, lo, hi int, h Head, sd side) {
	in := t.InputWidth()
	s := newRowState()
	for r := lo; r < hi; r++ {
		t.forwardRow(x[r*in:(r+1)*in], s)
		h.apply(sd, s)
		copy(out[r*EmbeddingDim:], s.u)
	}
}

// dot is the float32 inner product, unrolled with four independent accumulators (a fixed
// summation order, so results are reproducible).
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy computes y += alpha * x.
func axpy(alpha float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += alpha * v
	}
}

// Model is the trained two-tower recommender with its encoders: everything needed to turn raw
// features into embeddings. A Model is immutable once built; its methods are safe for
// concurrent use.
type Model struct {
	// Version is the artifacts version the model was loaded from or published as ("" before).
	Version string
	// Head is how the towers' outputs become embeddings (HeadBias for every model trained by
	// this code; HeadUnit for versions published before it).
	Head     Head
	User     *Tower
	Item     *Tower
	UserEnc  Encoder
	ItemEnc  Encoder
	Metadata ModelCard
}

// NewModel checks that the towers fit the encoders. The model has the bias head.
func NewModel(user, item *Tower, userEnc, itemEnc Encoder) (*Model, error) {
	if user.InputWidth() != userEnc.Width() {
		return nil, fmt.Errorf("user tower input width %d does not match the user encoders' width %d", user.InputWidth(), userEnc.Width())
	}
	if item.InputWidth() != itemEnc.Width() {
		return nil, fmt.Errorf("item tower input width %d does not match the item encoders' width %d", item.InputWidth(), itemEnc.Width())
	}
	return &Model{Head: HeadBias, User: user, Item: item, UserEnc: userEnc, ItemEnc: itemEnc}, nil
}

// UserEmbeddings returns one EmbeddingDim vector of length at most 1 per user (batched forward
// pass).
func (m *Model) UserEmbeddings(users []UserFeatures) [][]float32 {
	return rows(m.User.embed(m.UserEnc.EncodeUsers(users), len(users), m.Head, userSide), len(users))
}

// UserEmbedding returns the embedding of one user.
func (m *Model) UserEmbedding(u UserFeatures) []float32 {
	return m.UserEmbeddings([]UserFeatures{u})[0]
}

// ItemEmbeddings returns one EmbeddingDim vector per item.
func (m *Model) ItemEmbeddings(items []ItemFeatures) [][]float32 {
	return rows(m.Item.embed(m.ItemEnc.EncodeItems(items), len(items), m.Head, itemSide), len(items))
}

// PublishedItemEmbeddings returns the item embeddings as they are published (the
// item_embeddings.csv of a version): the item tower's embedding of each item, plus its
// popularity prior (PopularityPriors) in the item bias dimension. The prior changes a
// predicted rating by at most 2·PopularityWeight stars; it ranks items the model cannot tell
// apart (equal scores, as for every item when the data has no item effect) by popularity
// instead of arbitrarily.
func (m *Model) PublishedItemEmbeddings(items []Item) [][]float32 {
	f := make([]ItemFeatures, len(items))
	for i, it := range items {
		f[i] = it.Features
	}
	embs := m.ItemEmbeddings(f)
	if m.Head != HeadBias {
		return embs
	}
	for i, p := range PopularityPriors(items) {
		embs[i][ItemBiasIndex] += p / ItemBiasWeight
	}
	return embs
}

// PopularityWeight is the largest popularity prior (in score units, [-1, 1]).
const PopularityWeight = 0.005

// PopularityPriors returns each item's popularity prior: items ranked by ratings (most first,
// then by product code) get PopularityWeight·(n − rank)/n, n = len(items), so no two items
// share a prior.
func PopularityPriors(items []Item) []float32 {
	order := make([]int, len(items))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(items[b].Ratings, items[a].Ratings), cmp.Compare(items[a].ProductCode, items[b].ProductCode))
	})
	out := make([]float32, len(items))
	n := float64(len(items))
	for rank, i := range order {
		out[i] = float32(PopularityWeight * (n - float64(rank)) / n)
	}
	return out
}

// Predict is the model's rating for a user/item pair in stars: the inner product of the two
// embeddings mapped to stars (2·score + 3) and clamped to [1, 5].
func Predict(userEmb, itemEmb []float32) float64 {
	return scaledToStars(dot(userEmb, itemEmb))
}

func rows(flat []float32, n int) [][]float32 {
	out := make([][]float32, n)
	for r := range out {
		out[r] = flat[r*EmbeddingDim : (r+1)*EmbeddingDim : (r+1)*EmbeddingDim]
	}
	return out
}

// starsToScaled maps a rating in [1, 5] to the training target in [-1, 1].
func starsToScaled(r float64) float32 { return float32((r-1)/2 - 1) }

// scaledToStars maps a score back to stars, clamped to the rating scale [1, 5].
func scaledToStars(p float32) float64 { return min(max((float64(p)+1)*2+1, 1), 5) }
