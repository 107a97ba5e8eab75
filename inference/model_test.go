package inference_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/internal/towerref"
	"github.com/recstream/recstream/inference/train/traintest"
)

func TestEmbedMatchesFloat64Reference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, width := range []int{1, 18, 101} {
		for _, hs := range []struct {
			h  inference.Head
			sd inference.Side
		}{{inference.HeadUnit, inference.UserSide}, {inference.HeadBias, inference.UserSide}, {inference.HeadBias, inference.ItemSide}} {
			tw := inference.NewTower(width)
			tw.InitUniform(rng)
			const n = 7
			x := make([]float32, 0, n*width)
			for r := 0; r < n; r++ {
				if width == 1 {
					x = append(x, float32(rng.NormFloat64()))
					continue
				}
				x = append(x, towerref.RandomInput(rng, width)...)
			}
			got := tw.Embed(x, n, hs.h, hs.sd)
			for r := 0; r < n; r++ {
				x64 := make([]float64, width)
				for j := range x64 {
					x64[j] = float64(x[r*width+j])
				}
				want := towerref.Head(hs.h, hs.sd, towerref.Raw(tw, x64, towerref.NoPerturb))
				var norm float64
				for i, w := range want {
					g := float64(got[r*inference.EmbeddingDim+i])
					norm += g * g
					if math.Abs(g-w) > 1e-5 {
						t.Fatalf("%s %d width %d row %d dim %d: got %.9g, float64 reference %.9g", hs.h, hs.sd, width, r, i, g, w)
					}
				}
				if hs.h == inference.HeadUnit && math.Abs(norm-1) > 1e-5 {
					t.Fatalf("width %d row %d: |u|^2 = %g, want 1", width, r, norm)
				}
				if hs.h == inference.HeadBias && hs.sd == inference.UserSide && norm > 1+1e-5 {
					t.Fatalf("width %d row %d: user |u|^2 = %g > 1", width, r, norm)
				}
			}
		}
	}
}

// TestBiasHeadIsTheScore: with the bias head, u·v is f·g + user bias + c·item bias, and the
// unused outputs do not matter.
func TestBiasHeadIsTheScore(t *testing.T) {
	zu := make([]float32, inference.EmbeddingDim)
	zi := make([]float32, inference.EmbeddingDim)
	for i := range inference.InteractionDim {
		zu[i], zi[i] = 0.01*float32(i%3), 0.5*float32(i%2)
	}
	zu[inference.UserBiasIndex], zu[inference.ItemBiasIndex] = 0.3, 99 // 99: unused
	zi[inference.UserBiasIndex], zi[inference.ItemBiasIndex] = -99, 0.4
	su, si := inference.NewRowState(), inference.NewRowState()
	copy(su.Z, zu)
	copy(si.Z, zi)
	inference.HeadBias.Apply(inference.UserSide, su)
	inference.HeadBias.Apply(inference.ItemSide, si)
	want := float32(0)
	for i := range inference.InteractionDim {
		want += zu[i] * zi[i]
	}
	want += 0.3 + inference.ItemBiasWeight*0.4
	if got := inference.Dot(su.U, si.U); math.Abs(float64(got-want)) > 1e-6 {
		t.Fatalf("u·v = %g, want %g", got, want)
	}
}

func TestBatchedEmbedEqualsRowByRow(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const width, n = 40, 301 // large enough to be split across goroutines
	tw := inference.NewTower(width)
	tw.InitUniform(rng)
	var x []float32
	for r := 0; r < n; r++ {
		x = append(x, towerref.RandomInput(rng, width)...)
	}
	for _, sd := range []inference.Side{inference.UserSide, inference.ItemSide} {
		batched := tw.Embed(x, n, inference.HeadBias, sd)
		for r := 0; r < n; r++ {
			one := tw.Embed(x[r*width:(r+1)*width], 1, inference.HeadBias, sd)
			if !traintest.BitsEqual(one, batched[r*inference.EmbeddingDim:(r+1)*inference.EmbeddingDim]) {
				t.Fatalf("side %d row %d: batched result differs from the single-row result", sd, r)
			}
		}
	}
}

// TestExtremeInputsGiveFiniteEmbeddings: any finite input (clipped by the scaler) gives a
// finite embedding, and a user embedding never longer than 1, with a trained model.
func TestExtremeInputsGiveFiniteEmbeddings(t *testing.T) {
	m := traintest.RealModel(t).Model
	for _, credit := range []float64{0, -1e300, 1e300, math.MaxFloat64, 1e12, math.SmallestNonzeroFloat64} {
		u := m.UserEmbedding(inference.UserFeatures{City: "Nantes", Country: "France", CreditLimit: credit})
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
		e := m.ItemEmbeddings([]inference.ItemFeatures{{ProductLine: "Ships", ProductScale: "1:700", QuantityInStock: v, BuyPrice: v, MSRP: -v}})[0]
		for _, x := range e {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("item features %g: non-finite embedding %v", v, e)
			}
		}
	}
}
