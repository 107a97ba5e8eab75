package inference

import (
	"math"
	"math/rand/v2"
	"testing"
)

// refForward is an independent, naive float64 implementation of one tower on one input row:
// three dense layers, ReLU after the first two, L2 normalisation at the end.
func refForward(t *Tower, x []float64, perturb func(layer int, w bool, i int) float64) []float64 {
	h := x
	for l := range t.Layers {
		d := &t.Layers[l]
		out := make([]float64, d.Out)
		for o := 0; o < d.Out; o++ {
			s := float64(d.B[o]) + perturb(l, false, o)
			for j := 0; j < d.In; j++ {
				s += (float64(d.W[o*d.In+j]) + perturb(l, true, o*d.In+j)) * h[j]
			}
			if l < 2 && s < 0 {
				s = 0
			}
			out[o] = s
		}
		h = out
	}
	var n float64
	for _, v := range h {
		n += v * v
	}
	n = math.Sqrt(n)
	for i := range h {
		h[i] /= n
	}
	return h
}

func noPerturb(int, bool, int) float64 { return 0 }

func randomInput(rng *rand.Rand, width int) []float32 {
	x := make([]float32, width)
	x[rng.IntN(width-1)] = 1 // one-hot block
	x[width-1] = float32(rng.NormFloat64())
	return x
}

func TestForwardMatchesFloat64Reference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, width := range []int{1, 18, 101} {
		tw := NewTower(width)
		tw.initUniform(rng)
		const n = 7
		x := make([]float32, 0, n*width)
		for r := 0; r < n; r++ {
			if width == 1 {
				x = append(x, float32(rng.NormFloat64()))
				continue
			}
			x = append(x, randomInput(rng, width)...)
		}
		got := tw.Forward(x, n)
		for r := 0; r < n; r++ {
			x64 := make([]float64, width)
			for j := range x64 {
				x64[j] = float64(x[r*width+j])
			}
			want := refForward(tw, x64, noPerturb)
			var norm float64
			for i, w := range want {
				g := float64(got[r*EmbeddingDim+i])
				norm += g * g
				if math.Abs(g-w) > 1e-5 {
					t.Fatalf("width %d row %d dim %d: got %.9g, float64 reference %.9g", width, r, i, g, w)
				}
			}
			if math.Abs(norm-1) > 1e-5 {
				t.Fatalf("width %d row %d: |u|^2 = %g, want 1", width, r, norm)
			}
		}
	}
}

// TestBackwardMatchesFiniteDifferences checks the hand-written backward pass: the gradient of
// the batch MSE with respect to sampled weights of every layer of both towers equals the
// central difference of the float64 reference loss.
func TestBackwardMatchesFiniteDifferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const wu, wi, n = 12, 6, 5
	tr := &trainer{wu: wu, wi: wi, nUsers: n, nItems: n, user: NewTower(wu), item: NewTower(wi)}
	tr.user.initUniform(rng)
	tr.item.initUniform(rng)
	for r := 0; r < n; r++ {
		tr.xu = append(tr.xu, randomInput(rng, wu)...)
		tr.xi = append(tr.xi, randomInput(rng, wi)...)
	}
	tr.setup(TrainConfig{LearningRate: 0.001})
	batch := make([]row, n)
	for r := range batch {
		batch[r] = row{u: r, i: (r + 2) % n, y: float32(rng.Float64()*2 - 1)}
	}
	sh := &tr.shards[0]
	sh.run(tr, batch, 2/float32(n))

	loss := func(side string, layer int, w bool, idx int, eps float64) float64 {
		pert := func(l int, isW bool, i int) float64 {
			if l == layer && isW == w && i == idx {
				return eps
			}
			return 0
		}
		var sum float64
		for _, r := range batch {
			xu, xi := make([]float64, wu), make([]float64, wi)
			for j := range xu {
				xu[j] = float64(tr.xu[r.u*wu+j])
			}
			for j := range xi {
				xi[j] = float64(tr.xi[r.i*wi+j])
			}
			pu, pi := noPerturb, noPerturb
			if side == "user" {
				pu = pert
			} else {
				pi = pert
			}
			u, v := refForward(tr.user, xu, pu), refForward(tr.item, xi, pi)
			var p float64
			for k := range u {
				p += u[k] * v[k]
			}
			d := p - float64(r.y)
			sum += d * d
		}
		return sum / float64(len(batch))
	}
	checked := 0
	for _, side := range []string{"user", "item"} {
		g := sh.gu
		if side == "item" {
			g = sh.gi
		}
		for l := range g.Layers {
			for _, w := range []bool{true, false} {
				grad := g.Layers[l].B
				if w {
					grad = g.Layers[l].W
				}
				// Check the largest gradients of the layer (zero ones are trivially right).
				for k := 0; k < 3; k++ {
					best := -1
					for i, v := range grad {
						if best < 0 || math.Abs(float64(v)) > math.Abs(float64(grad[best])) {
							best = i
						}
					}
					if grad[best] == 0 {
						break
					}
					const eps = 1e-4
					num := (loss(side, l, w, best, eps) - loss(side, l, w, best, -eps)) / (2 * eps)
					an := float64(grad[best])
					if math.Abs(num-an) > 1e-3*math.Max(1e-3, math.Abs(num))+1e-6 {
						t.Errorf("%s layer %d weight=%v [%d]: analytic %.6g, numeric %.6g", side, l, w, best, an, num)
					}
					checked++
					grad[best] = 0 // next largest
				}
			}
		}
	}
	if checked < 24 {
		t.Fatalf("checked only %d gradients", checked)
	}
}

func TestBatchedForwardEqualsRowByRow(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const width, n = 40, 301 // large enough to be split across goroutines
	tw := NewTower(width)
	tw.initUniform(rng)
	var x []float32
	for r := 0; r < n; r++ {
		x = append(x, randomInput(rng, width)...)
	}
	batched := tw.Forward(x, n)
	for r := 0; r < n; r++ {
		one := tw.Forward(x[r*width:(r+1)*width], 1)
		if !bitsEqual(one, batched[r*EmbeddingDim:(r+1)*EmbeddingDim]) {
			t.Fatalf("row %d: batched result differs from the single-row result", r)
		}
	}
}
