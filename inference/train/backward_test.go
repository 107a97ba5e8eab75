package train

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/internal/towerref"
)

// TestBackwardMatchesFiniteDifferences checks the hand-written backward pass of both stages
// (the personal stage's from its per-customer sums, personalGradients):
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
		var xu, xi []float32
		for r := 0; r < nu; r++ {
			x := towerref.RandomInput(rng, wu)
			x[6+r%4] = 1                // a profile
			x[wu-1] *= float32(1 + 4*r) // larger inputs: outputs outside the ball
			xu = append(xu, x...)
		}
		for r := 0; r < ni; r++ {
			xi = append(xi, towerref.RandomInput(rng, wi)...)
		}
		d.xu = encodeSparse(nu, wu, func(dst []float32, k int) { copy(dst, xu[k*wu:]) })
		d.xi = encodeSparse(ni, wi, func(dst []float32, k int) { copy(dst, xi[k*wi:]) })
		const lb, le = 3, 2
		tr := newTrainer(d, inference.TrainConfig{LearningRate: 0.001, BiasPenalty: lb, EmbeddingPenalty: le})
		tr.user.InitUniform(rng)
		tr.item.InitUniform(rng)
		tr.zeroBlocks()
		tr.mean = 0.1
		batch := make([]row, 9)
		for r := range batch {
			batch[r] = row{u: int32(r % nu), i: int32((r*3 + 1) % ni), y: float32(rng.Float64()*2 - 1)}
		}
		slices.SortFunc(batch, func(a, b row) int { return cmp.Or(cmp.Compare(a.u, b.u), cmp.Compare(a.i, b.i)) })
		// The counts and anchors come from the unperturbed towers, as in training.
		tr.begin(st, batch)
		if st == stagePersonal {
			// As after some personal epochs: the identity readout is no longer zero.
			w2 := tr.user.Layers[2].W
			for j := inference.Hidden2 - inference.IdentityHidden2; j < inference.Hidden2; j++ {
				w2[inference.UserBiasIndex*inference.Hidden2+j] = float32(rng.Float64()*2-1) * 0.3
			}
			tr.personalGradients()
		} else {
			tr.gradients(batch)
		}
		inside, outside := 0, 0
		rs := inference.NewRowState()
		for u := int32(0); u < nu; u++ {
			idx, val := d.xu.row(u)
			forward(tr.user, idx, val, rs, inference.Hidden1, inference.Hidden2)
			inference.HeadBias.Apply(inference.UserSide, rs)
			if rs.N > inference.UserRadius {
				outside++
			} else {
				inside++
			}
		}
		if inside == 0 || outside == 0 {
			t.Fatalf("stage %d: users inside the ball %d, outside %d: want both", st, inside, outside)
		}
		fixedItems := tr.itemEmb

		loss := func(sd inference.Side, layer int, w bool, idx int, eps float64) float64 {
			pert := func(l int, isW bool, i int) float64 {
				if l == layer && isW == w && i == idx {
					return eps
				}
				return 0
			}
			var sum float64
			for _, r := range batch {
				fu, fi := make([]float64, wu), make([]float64, wi)
				for j := range fu {
					fu[j] = float64(xu[int(r.u)*wu+j])
				}
				for j := range fi {
					fi[j] = float64(xi[int(r.i)*wi+j])
				}
				pu, pi := towerref.NoPerturb, towerref.NoPerturb
				if sd == inference.UserSide {
					pu = pert
				} else {
					pi = pert
				}
				u := towerref.Head(inference.HeadBias, inference.UserSide, towerref.Raw(tr.user, fu, pu))
				v := towerref.Head(inference.HeadBias, inference.ItemSide, towerref.Raw(tr.item, fi, pi))
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
					for k := 0; k < inference.InteractionDim; k++ {
						pen += le / nU * (u[k] - float64(a[k])) * (u[k] - float64(a[k]))
					}
					pen += lb / nU * (u[inference.UserBiasIndex] - float64(a[inference.UserBiasIndex])) * (u[inference.UserBiasIndex] - float64(a[inference.UserBiasIndex]))
				} else {
					for k := 0; k < inference.InteractionDim; k++ {
						pen += le/nU*u[k]*u[k] + le/nI*v[k]*v[k]
					}
					b := u[inference.UserBiasIndex] - float64(tr.mean)
					c := inference.ItemBiasWeight * v[inference.ItemBiasIndex]
					pen += lb/nU*b*b + lb/nI*c*c
				}
				sum += e*e + pen
			}
			return sum / float64(len(batch))
		}
		grads := [2][][]float32{tr.grads[:6], tr.grads[6:]} // user W0 B0 W1 B1 W2 B2, then item
		sides := []inference.Side{inference.UserSide, inference.ItemSide}
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
		// The personal stage computes only what it trains: the identity path's weights (three
		// layers), not the biases.
		want := 30
		if st == stagePersonal {
			want = 9
		}
		if checked < want {
			t.Fatalf("stage %d: checked only %d gradients", st, checked)
		}
	}
}
