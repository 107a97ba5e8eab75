package train

import (
	"math"
	"sync"

	"github.com/recstream/recstream/inference"
)

// grow returns s resized to n zeroed elements.
func grow[T float32 | int](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// parallel runs fn(0..gradShards-1) concurrently and waits.
func parallel(fn func(s int)) {
	var wg sync.WaitGroup
	for s := 1; s < gradShards; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(s)
		}()
	}
	fn(0)
	wg.Wait()
}

// starsToScaled maps a rating in [1, 5] to the training target in [-1, 1] (inference.Stars
// maps back).
func starsToScaled(r float64) float32 { return float32((r-1)/2 - 1) }

// zeroOutput clears output o of the tower's last layer (weights and bias).
func zeroOutput(t *inference.Tower, o int) {
	d := &t.Layers[2]
	clear(d.W[o*d.In : (o+1)*d.In])
	d.B[o] = 0
}

// axpy computes y += alpha * x.
func axpy(alpha float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += alpha * v
	}
}

// headBackward turns dL/du (the embedding's gradient) into dL/dz (the raw output's) for the
// bias head (inference.HeadBias.Apply), the only head that is trained.
func headBackward(sd inference.Side, s *inference.RowState, du, dz []float32) {
	if sd == inference.ItemSide {
		copy(dz, du)
		dz[inference.UserBiasIndex] = 0 // the constant 1
		return
	}
	dz[inference.ItemBiasIndex] = 0 // the constant c
	w, g := s.Z[:inference.UserBiasIndex+1], du[:inference.UserBiasIndex+1]
	if s.N <= inference.UserRadius {
		copy(dz, g)
		return
	}
	// u = r·w/|w|  ⇒  dw = r/|w| · (du − ŵ (ŵ·du)), ŵ = w/|w|
	var c float64
	for o := range w {
		c += float64(w[o]) * float64(g[o])
	}
	c /= s.N * s.N
	k := inference.UserRadius / s.N
	for o := range w {
		dz[o] = float32(k * (float64(g[o]) - float64(w[o])*c))
	}
}

// backward adds the gradient of one sparse input row to g, given sh.dz = dL/dz for the
// tower's raw output, through the first n1 and n2 units of the hidden layers (see forward).
// (adam updates only what the stage trains.)
func (sh *shard) backward(t, g *inference.Tower, s *inference.RowState, idx []int32, val []float32, n1, n2 int) {
	d2, g2 := &t.Layers[2], &g.Layers[2]
	dh2 := sh.dh2[:n2]
	clear(dh2)
	for o, d := range sh.dz {
		if d == 0 {
			continue
		}
		axpy(d, s.H2[:n2], g2.W[o*d2.In:o*d2.In+n2])
		g2.B[o] += d
		axpy(d, d2.W[o*d2.In:o*d2.In+n2], dh2)
	}
	for i, h := range s.H2[:n2] {
		if h <= 0 {
			dh2[i] = 0
		}
	}
	d1, g1 := &t.Layers[1], &g.Layers[1]
	dh1 := sh.dh1[:n1]
	clear(dh1)
	for o, d := range dh2 {
		if d == 0 {
			continue
		}
		axpy(d, s.H1[:n1], g1.W[o*d1.In:o*d1.In+n1])
		g1.B[o] += d
		axpy(d, d1.W[o*d1.In:o*d1.In+n1], dh1)
	}
	g0 := &g.Layers[0]
	in := g0.In
	for o, d := range dh1 {
		if d == 0 || s.H1[o] <= 0 {
			continue
		}
		g0.B[o] += d
		w := g0.W[o*in : (o+1)*in]
		for k, j := range idx {
			w[j] += d * val[k]
		}
	}
}

// adam applies one Adam update, with the L2 weight decay added to the gradient (like
// torch.optim.Adam's weight_decay), to the parameters the stage trains: in the content stage
// every parameter except the user tower's identity columns, in the personal stage only those.
func (tr *trainer) adam() {
	tr.t++
	bc1 := float32(1 - math.Pow(adamBeta1, float64(tr.t)))
	bc2 := float32(1 - math.Pow(adamBeta2, float64(tr.t)))
	update := func(p, i int) {
		param, m, v := tr.params[p], tr.m[p], tr.v[p]
		gi := tr.grads[p][i] + tr.wd*param[i]
		m[i] = adamBeta1*m[i] + (1-adamBeta1)*gi
		v[i] = adamBeta2*v[i] + (1-adamBeta2)*gi*gi
		mh := m[i] / bc1
		vh := v[i] / bc2
		param[i] -= tr.lr * mh / (float32(math.Sqrt(float64(vh))) + adamEps)
	}
	for p, param := range tr.params {
		if p >= 6 {
			if tr.stage == stagePersonal {
				break
			}
			for i := range param {
				update(p, i)
			}
			continue
		}
		mask := tr.userMask[tr.stage][p]
		for i := range param {
			if mask[i] {
				update(p, i)
			}
		}
	}
}

// buildMasks lays out the user tower's two sub-networks (see inference.IdentityHidden1).
func (tr *trainer) buildMasks() {
	d := tr.d
	c1, c2 := inference.Hidden1-inference.IdentityHidden1, inference.Hidden2-inference.IdentityHidden2 // content units
	shapes := [6][2]int{{inference.Hidden1, d.wu}, {inference.Hidden1, 1}, {inference.Hidden2, inference.Hidden1}, {inference.Hidden2, 1}, {inference.EmbeddingDim, inference.Hidden2}, {inference.EmbeddingDim, 1}}
	for s := range tr.userMask {
		for p, sh := range shapes {
			tr.userMask[s][p] = make([]bool, sh[0]*sh[1])
		}
	}
	content, personal := &tr.userMask[stageContent], &tr.userMask[stagePersonal]
	for o := 0; o < inference.Hidden1; o++ {
		for j := 0; j < d.wu; j++ {
			if o < c1 {
				content[0][o*d.wu+j] = !d.identity[j]
			} else {
				personal[0][o*d.wu+j] = d.identity[j]
			}
		}
		content[1][o] = o < c1
	}
	for o := 0; o < inference.Hidden2; o++ {
		for j := 0; j < inference.Hidden1; j++ {
			if o < c2 {
				content[2][o*inference.Hidden1+j] = j < c1
			} else {
				personal[2][o*inference.Hidden1+j] = j >= c1
			}
		}
		content[3][o] = o < c2
	}
	for o := 0; o < inference.EmbeddingDim; o++ {
		for j := 0; j < inference.Hidden2; j++ {
			content[4][o*inference.Hidden2+j] = j < c2
			personal[4][o*inference.Hidden2+j] = j >= c2 && o == inference.UserBiasIndex
		}
		content[5][o] = true
	}
}
