package train

import (
	"math"

	"github.com/recstream/recstream/inference"
)

// significance is how many standard errors a content epoch must gain to replace the best one.
const significance = 2

// plateauTolerance is the relative fall of the training loss that counts as progress in the
// personal stage.
const plateauTolerance = 1e-4

// better reports whether the squared errors e beat best: a mean lower by more than
// significance standard errors of the mean paired difference.
func better(e, best []float64) bool {
	n := float64(len(e))
	var sum, sq float64
	for i := range e {
		x := e[i] - best[i]
		sum += x
		sq += x * x
	}
	mean := sum / n
	sd := math.Sqrt(max(0, sq/n-mean*mean))
	return mean < -significance*sd/math.Sqrt(n)
}

func rmsOf(sq []float64) float64 {
	var s float64
	for _, x := range sq {
		s += x
	}
	return math.Sqrt(s / float64(len(sq)))
}

// sqErrors returns the squared errors in stars of the towers on rows.
func (d *dataset) sqErrors(user, item *inference.Tower, rows []row) []float64 {
	ue, ie := d.embedUsed(user, item, rows)
	out := make([]float64, len(rows))
	for k, r := range rows {
		p := inference.Stars(inference.Dot(ue[r.u], ie[r.i]))
		s := float64(r.stars)
		out[k] = (p - s) * (p - s)
	}
	return out
}

// embedUsed returns the embeddings of the users and items rows refer to (nil for the others),
// computed like inference.Tower.Embed (same arithmetic) from the sparse inputs, on
// gradShards goroutines.
func (d *dataset) embedUsed(user, item *inference.Tower, rows []row) (ue, ie [][]float32) {
	ue, ie = make([][]float32, d.nUsers), make([][]float32, d.nItems)
	var us, is []int32
	for _, r := range rows {
		if ue[r.u] == nil {
			ue[r.u] = []float32{}
			us = append(us, r.u)
		}
		if ie[r.i] == nil {
			ie[r.i] = []float32{}
			is = append(is, r.i)
		}
	}
	eu := make([]float32, len(us)*inference.EmbeddingDim)
	ei := make([]float32, len(is)*inference.EmbeddingDim)
	parallel(func(s int) {
		st := inference.NewRowState()
		for n := s * len(us) / gradShards; n < (s+1)*len(us)/gradShards; n++ {
			idx, val := d.xu.row(us[n])
			forward(user, idx, val, st, inference.Hidden1, inference.Hidden2)
			inference.HeadBias.Apply(inference.UserSide, st)
			copy(eu[n*inference.EmbeddingDim:], st.U)
		}
		for n := s * len(is) / gradShards; n < (s+1)*len(is)/gradShards; n++ {
			idx, val := d.xi.row(is[n])
			forward(item, idx, val, st, inference.Hidden1, inference.Hidden2)
			inference.HeadBias.Apply(inference.ItemSide, st)
			copy(ei[n*inference.EmbeddingDim:], st.U)
		}
	})
	for n, k := range us {
		ue[k] = eu[n*inference.EmbeddingDim : (n+1)*inference.EmbeddingDim]
	}
	for n, k := range is {
		ie[k] = ei[n*inference.EmbeddingDim : (n+1)*inference.EmbeddingDim]
	}
	return ue, ie
}
