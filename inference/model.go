package inference

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
)

// Tower shape: Dense(Hidden1, ReLU) → Dense(Hidden2, ReLU) → Dense(EmbeddingDim), then L2
// normalisation. Both towers have it; only the input width differs.
const (
	Hidden1      = 256
	Hidden2      = 128
	EmbeddingDim = 32
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
	z  []float32 // pre-normalisation output, EmbeddingDim
	u  []float32 // normalised output, EmbeddingDim
	n  float32   // max(||z||, eps)
}

func newRowState() *rowState {
	return &rowState{h1: make([]float32, Hidden1), h2: make([]float32, Hidden2), z: make([]float32, EmbeddingDim), u: make([]float32, EmbeddingDim)}
}

// forwardRow runs one input row through the tower, filling s. The first layer visits only the
// input's non-zero entries: the one-hot blocks make it sparse.
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
	// The norm is taken in float64: a float32 sum of squares overflows for activations above
	// ~1e19, and Inf/Inf would make a NaN embedding.
	var ss float64
	for _, v := range s.z {
		ss += float64(v) * float64(v)
	}
	n := max(math.Sqrt(ss), normEps)
	s.n = float32(n)
	for o, v := range s.z {
		s.u[o] = float32(float64(v) / n)
	}
}

// Forward embeds n input rows (x holds n rows of InputWidth values) and returns n rows of
// EmbeddingDim unit-length values. It is pure computation, safe for concurrent use on a tower
// that is not being trained.
func (t *Tower) Forward(x []float32, n int) []float32 {
	in := t.InputWidth()
	if len(x) != n*in {
		panic(fmt.Sprintf("inference: Tower.Forward: %d values for %d rows of width %d", len(x), n, in)) // programming error
	}
	out := make([]float32, n*EmbeddingDim)
	// Rows are independent, so a large batch is split across cores; each row's arithmetic is
	// the same either way, so the result does not depend on the split.
	workers := min(runtime.GOMAXPROCS(0), n/minRowsPerWorker)
	if workers <= 1 {
		t.forwardRows(x, out, 0, n)
		return out
	}
	var wg sync.WaitGroup
	per := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += per {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			t.forwardRows(x, out, lo, hi)
		}(lo, min(lo+per, n))
	}
	wg.Wait()
	return out
}

// minRowsPerWorker is the smallest share of a batch worth a goroutine.
const minRowsPerWorker = 32

func (t *Tower) forwardRows(x, out []float32, lo, hi int) {
	in := t.InputWidth()
	s := newRowState()
	for r := lo; r < hi; r++ {
		t.forwardRow(x[r*in:(r+1)*in], s)
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
	Version  string
	User     *Tower
	Item     *Tower
	UserEnc  Encoder
	ItemEnc  Encoder
	Metadata ModelCard
}

// NewModel checks that the towers fit the encoders.
func NewModel(user, item *Tower, userEnc, itemEnc Encoder) (*Model, error) {
	if user.InputWidth() != userEnc.Width() {
		return nil, fmt.Errorf("user tower input width %d does not match the user encoders' width %d", user.InputWidth(), userEnc.Width())
	}
	if item.InputWidth() != itemEnc.Width() {
		return nil, fmt.Errorf("item tower input width %d does not match the item encoders' width %d", item.InputWidth(), itemEnc.Width())
	}
	return &Model{User: user, Item: item, UserEnc: userEnc, ItemEnc: itemEnc}, nil
}

// UserEmbeddings returns one unit-length EmbeddingDim vector per user (batched forward pass).
func (m *Model) UserEmbeddings(users []UserFeatures) [][]float32 {
	return rows(m.User.Forward(m.UserEnc.EncodeUsers(users), len(users)), len(users))
}

// UserEmbedding returns the embedding of one user.
func (m *Model) UserEmbedding(u UserFeatures) []float32 {
	return m.UserEmbeddings([]UserFeatures{u})[0]
}

// ItemEmbeddings returns one unit-length EmbeddingDim vector per item.
func (m *Model) ItemEmbeddings(items []ItemFeatures) [][]float32 {
	return rows(m.Item.Forward(m.ItemEnc.EncodeItems(items), len(items)), len(items))
}

// Predict is the model's rating for a user/item pair in stars: the dot product of the two
// embeddings (in [-1, 1]) mapped back to [1, 5].
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

// scaledToStars maps a prediction in [-1, 1] back to stars.
func scaledToStars(p float32) float64 { return (float64(p)+1)*2 + 1 }
