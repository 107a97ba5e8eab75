package inference

import (
	"math"
	"math/rand/v2"
	"testing"
)

// refRaw is an independent, naive float64 implementation of one tower on one input row:
// three dense layers, ReLU after the first two; it returns the raw output.
func refRaw(t *Tower, x []float64, perturb func(layer int, w bool, i int) float64) []float64 {
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
	return h
}

// refHead is the heads' definition in float64.
func refHead(h Head, sd side, z []float64) []float64 {
	u := make([]float64, len(z))
	switch {
	case h == HeadUnit:
		var n float64
		for _, v := range z {
			n += v * v
		}
		n = math.Sqrt(n)
		for i := range z {
			u[i] = z[i] / n
		}
	case sd == userSide:
		var n float64
		for _, v := range z[:UserBiasIndex+1] {
			n += v * v
		}
		n = math.Sqrt(n)
		k := 1.0
		if r := math.Sqrt(1 - ItemBiasWeight*ItemBiasWeight); n > r {
			k = r / n
		}
		for i := range z[:UserBiasIndex+1] {
			u[i] = z[i] * k
		}
		u[ItemBiasIndex] = ItemBiasWeight
	default:
		copy(u, z)
		u[UserBiasIndex] = 1
	}
	return u
}

func noPerturb(int, bool, int) float64 { return 0 }

func randomInput(rng *rand.Rand, width int) []float32 {
	x := make([]float32, width)
	x[rng.IntN(width-1)] = 1 // one-hot block
	x[width-1] = float32(rng.NormFloat64())
	return x
}

func TestEmbedMatchesFloat64Reference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, width := range []int{1, 18, 101} {
		for _, hs := range []struct {
			h  Head
			sd side
		}{{HeadUnit, userSide}, {HeadBias, userSide}, {HeadBias, itemSide}} {
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
			got := tw.embed(x, n, hs.h, hs.sd)
			for r := 0; r < n; r++ {
				x64 := make([]float64, width)
				for j := range x64 {
					x64[j] = float64(x[r*width+j])
				}
				want := refHead(hs.h, hs.sd, refRaw(tw, x64, noPerturb))
				var norm float64
				for i, w := range want {
					g := float64(got[r*EmbeddingDim+i])
					norm += g * g
					if math.Abs(g-w) > 1e-5 {
						t.Fatalf("%s %d width %d row %d dim %d: got %.9g, float64 reference %.9g", hs.h, hs.sd, width, r, i, g, w)
					}
				}
				if hs.h == HeadUnit && math.Abs(norm-1) > 1e-5 {
					t.Fatalf("width %d row %d: |u|^2 = %g, want 1", width, r, norm)
				}
				if hs.h == HeadBias && hs.sd == userSide && norm > 1+1e-5 {
					t.Fatalf("width %d row %d: user |u|^2 = %g > 1", width, r, norm)
				}
			}
		}
	}
}

// TestBiasHeadIsTheScore: with the bias head, u·v is f·g + user bias + c·item bias, and the
// unused outputs do not matter.
func TestBiasHeadIsTheScore(t *testing.T) {
	zu := make([]float32, EmbeddingDim)
	zi := make([]float32, EmbeddingDim)
	for i := range InteractionDim {
		zu[i], zi[i] = 0.01*float32(i%3), 0.5*float32(i%2)
	}
	zu[UserBiasIndex], zu[ItemBiasIndex] = 0.3, 99 // 99: unused
	zi[UserBiasIndex], zi[ItemBiasIndex] = -99, 0.4
	su, si := newRowState(), newRowState()
	copy(su.z, zu)
	copy(si.z, zi)
	HeadBias.apply(userSide, su)
	HeadBias.apply(itemSide, si)
	want := float32(0)
	for i := range InteractionDim {
		want += zu[i] * zi[i]
	}
	want += 0.3 + ItemBiasWeight*0.4
	if got := dot(su.u, si.u); math.Abs(float64(got-want)) > 1e-6 {
		t.Fatalf("u·v = %g, want %g", got, want)
	}
}

// TestBackwardMatchesFiniteDifferences checks the hand-written backward pass of both stages:
// the gradient of the batch loss (squared errors plus the penalties of trainer.gradients) with
// respect to sampled weights of every layer of both towers equals the central difference of
// the float64 reference loss. Users are drawn both inside and outside the user ball (both
// branches of the head's backward pass), and users and items repeat in the batch (their
// gradients are summed before the backward pass).
func TestBackwardMatchesFiniteDifferences(t *testing.T) {
	for _, st := range []stage{stageContent, stagePersonal} {
		rng := rand.New(rand.NewPCG(3, 4))
		const wu, wi, nu, ni = 12, 6, 5, 4
		d := &dataset{wu: wu, wi: wi, nUsers: nu, nItems: ni, identity: make([]bool, wu)}
		for j := 6; j < 10; j++ {
			d.identity[j] = true
		}
		for r := 0; r < nu; r++ {
			x := randomInput(rng, wu)
			x[6+r%4] = 1                // a profile
			x[wu-1] *= float32(1 + 4*r) // larger inputs: outputs outside the ball
			d.xu = append(d.xu, x...)
		}
		for r := 0; r < ni; r++ {
			d.xi = append(d.xi, randomInput(rng, wi)...)
		}
		const lb, le = 3, 2
		tr := newTrainer(d, TrainConfig{LearningRate: 0.001, BiasPenalty: lb, EmbeddingPenalty: le})
		tr.user.initUniform(rng)
		tr.item.initUniform(rng)
		tr.mean = 0.1
		batch := make([]row, 9)
		for r := range batch {
			batch[r] = row{u: r % nu, i: (r*3 + 1) % ni, y: float32(rng.Float64()*2 - 1)}
		}
		// The counts and anchors come from the unperturbed towers, as in training.
		tr.begin(st, batch)
		tr.gradients(batch)
		inside, outside := 0, 0
		for k := range tr.uList {
			if tr.uState[k].n > userRadius {
				outside++
			} else {
				inside++
			}
		}
		if inside == 0 || outside == 0 {
			t.Fatalf("stage %d: users inside the ball %d, outside %d: want both", st, inside, outside)
		}
		fixedItems := tr.itemEmb

		loss := func(sd side, layer int, w bool, idx int, eps float64) float64 {
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
					xu[j] = float64(d.xu[r.u*wu+j])
				}
				for j := range xi {
					xi[j] = float64(d.xi[r.i*wi+j])
				}
				pu, pi := noPerturb, noPerturb
				if sd == userSide {
					pu = pert
				} else {
					pi = pert
				}
				u := refHead(HeadBias, userSide, refRaw(tr.user, xu, pu))
				v := refHead(HeadBias, itemSide, refRaw(tr.item, xi, pi))
				if st == stagePersonal {
					for k := range v {
						v[k] = float64(fixedItems[r.i][k])
					}
				}
				var p float64
				for k := range u {
					p += u[k] * v[k]
				}
				e := p - float64(r.y)
				nU, nI := float64(tr.nu[r.u]), float64(tr.ni[r.i])
				pen := 0.0
				if st == stagePersonal {
					a := tr.anchor[r.u]
					for k := 0; k < InteractionDim; k++ {
						pen += le / nU * (u[k] - float64(a[k])) * (u[k] - float64(a[k]))
					}
					pen += lb / nU * (u[UserBiasIndex] - float64(a[UserBiasIndex])) * (u[UserBiasIndex] - float64(a[UserBiasIndex]))
				} else {
					for k := 0; k < InteractionDim; k++ {
						pen += le/nU*u[k]*u[k] + le/nI*v[k]*v[k]
					}
					b := u[UserBiasIndex] - float64(tr.mean)
					c := ItemBiasWeight * v[ItemBiasIndex]
					pen += lb/nU*b*b + lb/nI*c*c
				}
				sum += e*e + pen
			}
			return sum / float64(len(batch))
		}
		grads := [2][][]float32{tr.grads[:6], tr.grads[6:]} // user W0 B0 W1 B1 W2 B2, then item
		sides := []side{userSide, itemSide}
		if st == stagePersonal {
			sides = sides[:1] // the item tower is fixed
		}
		checked := 0
		for _, sd := range sides {
			for l := 0; l < 3; l++ {
				for _, w := range []bool{true, false} {
					grad := grads[sd][2*l]
					if !w {
						grad = grads[sd][2*l+1]
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
						num := (loss(sd, l, w, best, eps) - loss(sd, l, w, best, -eps)) / (2 * eps)
						an := float64(grad[best])
						if math.Abs(num-an) > 1e-3*math.Max(1e-3, math.Abs(num))+1e-6 {
							t.Errorf("stage %d side %d layer %d weight=%v [%d]: analytic %.6g, numeric %.6g", st, sd, l, w, best, an, num)
						}
						checked++
						grad[best] = 0 // next largest
					}
				}
			}
		}
		if checked < 15*len(sides) {
			t.Fatalf("stage %d: checked only %d gradients", st, checked)
		}
	}
}

// TestUnknownProfileGetsTheContentModel: the identity units contribute nothing for a customer
// whose profile the model does not know, and the trained towers keep the block structure.
func TestUnknownProfileGetsTheContentModel(t *testing.T) {
	m := realModel(t).Model
	content := m.User.clone()
	c1, c2 := Hidden1-IdentityHidden1, Hidden2-IdentityHidden2
	d0, d1, d2 := &content.Layers[0], &content.Layers[1], &content.Layers[2]
	for o := c1; o < Hidden1; o++ {
		clear(d0.W[o*d0.In : (o+1)*d0.In])
		if d0.B[o] != 0 {
			t.Fatalf("identity unit %d has bias %g", o, d0.B[o])
		}
	}
	for o := c2; o < Hidden2; o++ {
		clear(d1.W[o*d1.In : (o+1)*d1.In])
	}
	for o := 0; o < EmbeddingDim; o++ {
		clear(d2.W[o*d2.In+c2 : (o+1)*d2.In])
	}
	cm := *m
	cm.User = content
	known := realModel(t).Users[0].Features
	unknown := known
	unknown.CreditLimit += 100 // same city and country, another profile
	if got, want := m.UserEmbedding(unknown), cm.UserEmbedding(unknown); !bitsEqual(got, want) {
		t.Fatalf("unknown profile: embedding %v, content model %v", got, want)
	}
	if got, want := m.UserEmbedding(known), cm.UserEmbedding(known); bitsEqual(got, want) {
		t.Fatal("a known customer gets the content model's embedding: no personalisation")
	}
}

func TestBatchedEmbedEqualsRowByRow(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const width, n = 40, 301 // large enough to be split across goroutines
	tw := NewTower(width)
	tw.initUniform(rng)
	var x []float32
	for r := 0; r < n; r++ {
		x = append(x, randomInput(rng, width)...)
	}
	for _, sd := range []side{userSide, itemSide} {
		batched := tw.embed(x, n, HeadBias, sd)
		for r := 0; r < n; r++ {
			one := tw.embed(x[r*width:(r+1)*width], 1, HeadBias, sd)
			if !bitsEqual(one, batched[r*EmbeddingDim:(r+1)*EmbeddingDim]) {
				t.Fatalf("side %d row %d: batched result differs from the single-row result", sd, r)
			}
		}
	}
}

// TestExtremeInputsGiveFiniteEmbeddings: any finite input (clipped by the scaler) gives a
// finite embedding, and a user embedding never longer than 1, with a trained model.
func TestExtremeInputsGiveFiniteEmbeddings(t *testing.T) {
	m := realModel(t).Model
	for _, credit := range []float64{0, -1e300, 1e300, math.MaxFloat64, 1e12, math.SmallestNonzeroFloat64} {
		u := m.UserEmbedding(UserFeatures{City: "Nantes", Country: "France", CreditLimit: credit})
		var norm float64
		for _, x := range u {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("credit %g: non-finite user embedding %v", credit, u)
			}
			norm += float64(x) * float64(x)
		}
		if norm > 1.0001 {
			t.Fatalf("credit %g: |u|^2 = %g > 1", credit, norm)
		}
	}
	for _, v := range []float64{-1e300, 1e300, math.MaxFloat64} {
		e := m.ItemEmbeddings([]ItemFeatures{{ProductLine: "Ships", ProductScale: "1:700", QuantityInStock: v, BuyPrice: v, MSRP: -v}})[0]
		for _, x := range e {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("item features %g: non-finite embedding %v", v, e)
			}
		}
	}
}
