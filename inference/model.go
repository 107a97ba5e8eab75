package inference

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
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

// UserRadius is the bound on |(f, b)| of a user embedding: with the constant c the user
// embedding has length at most 1. The bias head scales (f, b) onto it when longer; the
// trainer's backward pass of the head needs the same bound.
var UserRadius = math.Sqrt(1 - ItemBiasWeight*ItemBiasWeight)

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

// InitUniform fills the tower like PyTorch's nn.Linear default: weights and biases drawn from
// U(-1/sqrt(in), 1/sqrt(in)), in a fixed order so one seed gives one model. The trainer starts
// from it.
func (t *Tower) InitUniform(rng *rand.Rand) {
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

// Clone returns a deep copy.
func (t *Tower) Clone() *Tower {
	c := &Tower{}
	for l, d := range t.Layers {
		c.Layers[l] = Dense{In: d.In, Out: d.Out, W: append([]float32(nil), d.W...), B: append([]float32(nil), d.B...)}
	}
	return c
}

// RowState holds one row's activations: what ForwardRow and Head.Apply compute, kept for the
// trainer's backward pass. Embedding reuses one per goroutine; it is not safe for concurrent use.
type RowState struct {
	NZ []int     // indices of the input's non-zero entries
	H1 []float32 // after ReLU, Hidden1
	H2 []float32 // after ReLU, Hidden2
	Z  []float32 // raw output, EmbeddingDim
	U  []float32 // embedding (after the head), EmbeddingDim
	N  float64   // the head's norm: |z| (unit head) or |(f, b)| (user bias head)
}

// NewRowState returns a RowState sized for the towers.
func NewRowState() *RowState {
	return &RowState{H1: make([]float32, Hidden1), H2: make([]float32, Hidden2), Z: make([]float32, EmbeddingDim), U: make([]float32, EmbeddingDim)}
}

// ForwardRow runs one input row through the tower, filling s.NZ, s.H1, s.H2 and s.Z (the raw
// output). The first layer visits only the input's non-zero entries: the one-hot blocks make it
// sparse.
func (t *Tower) ForwardRow(x []float32, s *RowState) {
	s.NZ = s.NZ[:0]
	for j, v := range x {
		if v != 0 {
			s.NZ = append(s.NZ, j)
		}
	}
	d0 := &t.Layers[0]
	for o := 0; o < d0.Out; o++ {
		w := d0.W[o*d0.In : (o+1)*d0.In]
		acc := d0.B[o]
		for _, j := range s.NZ {
			acc += w[j] * x[j]
		}
		s.H1[o] = max(acc, 0)
	}
	d1 := &t.Layers[1]
	for o := 0; o < d1.Out; o++ {
		s.H2[o] = max(d1.B[o]+Dot(d1.W[o*d1.In:(o+1)*d1.In], s.H1), 0)
	}
	d2 := &t.Layers[2]
	for o := 0; o < d2.Out; o++ {
		s.Z[o] = d2.B[o] + Dot(d2.W[o*d2.In:(o+1)*d2.In], s.H2)
	}
}

// Side says which tower a head is applied to.
type Side int

// The two towers.
const (
	UserSide Side = iota
	ItemSide
)

// Apply turns s.Z into the embedding s.U (and sets s.N). Norms are taken in float64: a float32 sum of squares
// overflows for activations above ~1e19, and Inf/Inf would make a NaN embedding; so any finite
// raw output gives a finite embedding.
func (h Head) Apply(sd Side, s *RowState) {
	switch {
	case h == HeadBias && sd == UserSide:
		var ss float64
		for _, v := range s.Z[:UserBiasIndex+1] {
			ss += float64(v) * float64(v)
		}
		s.N = math.Sqrt(ss)
		if s.N > UserRadius {
			k := UserRadius / s.N
			for o, v := range s.Z[:UserBiasIndex+1] {
				s.U[o] = float32(float64(v) * k)
			}
		} else {
			copy(s.U, s.Z[:UserBiasIndex+1])
		}
		s.U[ItemBiasIndex] = ItemBiasWeight
	case h == HeadBias: // item
		copy(s.U, s.Z)
		s.U[UserBiasIndex] = 1
	default: // HeadUnit
		var ss float64
		for _, v := range s.Z {
			ss += float64(v) * float64(v)
		}
		s.N = max(math.Sqrt(ss), normEps)
		for o, v := range s.Z {
			s.U[o] = float32(float64(v) / s.N)
		}
	}
}

// Embed runs n input rows (x holds n rows of InputWidth values) through the tower and head h
// (applied as side sd) and returns n rows of EmbeddingDim values. It is pure computation, safe
// for concurrent use on a tower that is not being trained. An x of another length is a
// programming error and panics.
func (t *Tower) Embed(x []float32, n int, h Head, sd Side) []float32 {
	in := t.InputWidth()
	if len(x) != n*in {
		panic(fmt.Sprintf("inference: Tower.Embed: %d values for %d rows of width %d", len(x), n, in)) // programming error
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
func (t *Tower) Forward(x []float32, n int) []float32 { return t.Embed(x, n, HeadUnit, UserSide) }

// minRowsPerWorker is the smallest share of a batch worth a goroutine.
const minRowsPerWorker = 32

func (t *Tower) embedRows(x, out []float32, lo, hi int, h Head, sd Side) {
	in := t.InputWidth()
	s := NewRowState()
	for r := lo; r < hi; r++ {
		t.ForwardRow(x[r*in:(r+1)*in], s)
		h.Apply(sd, s)
		copy(out[r*EmbeddingDim:], s.U)
	}
}

// Dot is the float32 inner product the model scores with, unrolled with four independent
// accumulators (a fixed summation order, so results are reproducible). The trainer uses it so
// that it scores exactly as serving does.
func Dot(a, b []float32) float32 {
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
	return rows(m.User.Embed(m.UserEnc.EncodeUsers(users), len(users), m.Head, UserSide), len(users))
}

// UserEmbedding returns the embedding of one user.
func (m *Model) UserEmbedding(u UserFeatures) []float32 {
	return m.UserEmbeddings([]UserFeatures{u})[0]
}

// ItemEmbeddings returns one EmbeddingDim vector per item.
func (m *Model) ItemEmbeddings(items []ItemFeatures) [][]float32 {
	return rows(m.Item.Embed(m.ItemEnc.EncodeItems(items), len(items), m.Head, ItemSide), len(items))
}

// Predict is the model's rating for a user/item pair in stars: the inner product of the two
// embeddings mapped to stars (2·score + 3) and clamped to [1, 5].
func Predict(userEmb, itemEmb []float32) float64 {
	return Stars(Dot(userEmb, itemEmb))
}

func rows(flat []float32, n int) [][]float32 {
	out := make([][]float32, n)
	for r := range out {
		out[r] = flat[r*EmbeddingDim : (r+1)*EmbeddingDim : (r+1)*EmbeddingDim]
	}
	return out
}

// Stars maps a score (an inner product of a user and an item embedding, the model's output in
// [-1, 1] on the scaled rating) back to stars, clamped to the rating scale [1, 5].
func Stars(p float32) float64 { return min(max((float64(p)+1)*2+1, 1), 5) }
