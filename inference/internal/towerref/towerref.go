// Package towerref is an independent, naive float64 implementation of the towers and heads of
// package inference, for tests: the embedding tests of package inference and the gradient
// check of package train compare the float32 code against it. Only tests import it.
package towerref

import (
	"math"
	"math/rand/v2"

	"github.com/recstream/recstream/inference"
)

// Raw runs one input row through t's three dense layers, ReLU after the first two, in float64
// and returns the raw output. perturb(layer, isWeight, index) is added to each weight and bias
// as it is read (NoPerturb adds nothing), for finite differences.
func Raw(t *inference.Tower, x []float64, perturb func(layer int, w bool, i int) float64) []float64 {
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

// Head is the heads' definition in float64: the embedding head h makes of the raw output z of
// side sd's tower.
func Head(h inference.Head, sd inference.Side, z []float64) []float64 {
	u := make([]float64, len(z))
	switch {
	case h == inference.HeadUnit:
		var n float64
		for _, v := range z {
			n += v * v
		}
		n = math.Sqrt(n)
		for i := range z {
			u[i] = z[i] / n
		}
	case sd == inference.UserSide:
		var n float64
		for _, v := range z[:inference.UserBiasIndex+1] {
			n += v * v
		}
		n = math.Sqrt(n)
		k := 1.0
		if r := math.Sqrt(1 - inference.ItemBiasWeight*inference.ItemBiasWeight); n > r {
			k = r / n
		}
		for i := range z[:inference.UserBiasIndex+1] {
			u[i] = z[i] * k
		}
		u[inference.ItemBiasIndex] = inference.ItemBiasWeight
	default:
		copy(u, z)
		u[inference.UserBiasIndex] = 1
	}
	return u
}

// NoPerturb is the perturbation of Raw that changes nothing.
func NoPerturb(int, bool, int) float64 { return 0 }

// RandomInput returns an input row of the given width (at least 2) shaped like an encoded one:
// a one in the one-hot part and a standard normal last value.
func RandomInput(rng *rand.Rand, width int) []float32 {
	x := make([]float32, width)
	x[rng.IntN(width-1)] = 1 // one-hot block
	x[width-1] = float32(rng.NormFloat64())
	return x
}
