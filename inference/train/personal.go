package train

import (
	"math"

	"github.com/recstream/recstream/inference"
)

// personalStats is what the personal stage's loss needs of one customer's ratings. In that
// stage only the user bias output b (raw) changes; the interaction outputs f, the item
// embeddings v_i = [g_i, 1, d_i] and c are fixed, and the head scales (f, b) by
// k = min(1, R/|(f, b)|). A rating's prediction is k·(p_i + b) + q_i with p_i = f·g_i and
// q_i = c·d_i, so with r_i = y_i − q_i the customer's squared errors sum to
//
//	k²·(Σp² + 2b·Σp + n·b²) − 2k·(Σpr + b·Σr) + Σr²
//
// which these sums give exactly for any b, in O(1).
type personalStats struct {
	u                   int32
	n, sp, spp, sr, spr float64
	srr                 float64
	// f·f and f·a (a: the anchor's interaction part), the anchor's bias, and the content
	// sub-network's part of b (the identity part is added each step).
	ff, fa, a30 float64
	zc          float32
	// The customer's identity inputs (the profile column), if the model knows the profile.
	idx []int32
	val []float32
}

// beginPersonal computes the personal stage's per-customer sums over rows.
func (tr *trainer) beginPersonal(rows []row) {
	d := tr.d
	const fd = inference.InteractionDim
	tr.personal, tr.personalRows = tr.personal[:0], len(rows)
	st := inference.NewRowState()
	for lo := 0; lo < len(rows); {
		hi := lo
		for hi < len(rows) && rows[hi].u == rows[lo].u {
			hi++
		}
		u := rows[lo].u
		idx, val := d.xu.row(u)
		forward(tr.user, idx, val, st, inference.Hidden1, inference.Hidden2)
		ps := personalStats{u: u, n: float64(hi - lo), zc: st.Z[inference.UserBiasIndex], a30: float64(tr.anchor[u][inference.UserBiasIndex])}
		f := st.Z[:fd]
		for o, x := range f {
			ps.ff += float64(x) * float64(x)
			ps.fa += float64(x) * float64(tr.anchor[u][o])
		}
		for k, j := range idx {
			if d.identity[j] {
				ps.idx, ps.val = append(ps.idx, j), append(ps.val, val[k])
			}
		}
		for _, r := range rows[lo:hi] {
			v := tr.itemEmb[r.i]
			var p float64
			for o, x := range f {
				p += float64(x) * float64(v[o])
			}
			q := inference.ItemBiasWeight * float64(v[inference.ItemBiasIndex])
			y := float64(r.y) - q
			ps.sp += p
			ps.spp += p * p
			ps.sr += y
			ps.spr += p * y
			ps.srr += y * y
		}
		tr.personal = append(tr.personal, ps)
		lo = hi
	}
}

// personalGradients computes tr.grads for the personal stage over all its ratings (the
// gradient of the same loss as gradients, with a_u the content stage's embedding of the
// user: (bias_penalty/n_u)·(b_u − a_b)² + (embedding_penalty/n_u)·|f_u − a_f|² per rating)
// from the per-customer sums, and returns the sum of squared errors. Only the identity
// sub-network's path into the user bias is trained, so each customer's forward and backward
// pass runs on that path alone.
func (tr *trainer) personalGradients() float64 {
	d := tr.d
	const (
		c1, c2 = inference.Hidden1 - inference.IdentityHidden1, inference.Hidden2 - inference.IdentityHidden2
		h1, h2 = inference.IdentityHidden1, inference.IdentityHidden2
		bias   = inference.UserBiasIndex
	)
	W0, B0 := tr.user.Layers[0].W, tr.user.Layers[0].B
	W1, B1 := tr.user.Layers[1].W, tr.user.Layers[1].B
	W2 := tr.user.Layers[2].W
	wu, H1, H2 := d.wu, inference.Hidden1, inference.Hidden2
	s2 := 2 / float64(tr.personalRows)
	lb, le := float64(tr.biasPenalty), float64(tr.embedPenalty)
	R := inference.UserRadius
	n := len(tr.personal)
	parallel(func(s int) {
		sh := &tr.shards[s]
		for _, g := range sh.grads[:6] {
			clear(g)
		}
		g0, g1, g2 := sh.gu.Layers[0].W, sh.gu.Layers[1].W, sh.gu.Layers[2].W
		a1, a2 := sh.dh1[:h1], sh.dh2[:h2] // activations of the identity units
		var da1, da2 [inference.IdentityHidden1]float32
		sh.sse = 0
		for k := s * n / gradShards; k < (s+1)*n/gradShards; k++ {
			ps := &tr.personal[k]
			for o := 0; o < h1; o++ {
				w := W0[(c1+o)*wu : (c1+o+1)*wu]
				acc := B0[c1+o]
				for m, j := range ps.idx {
					acc += w[j] * ps.val[m]
				}
				a1[o] = max(acc, 0)
			}
			for o := 0; o < h2; o++ {
				a2[o] = max(B1[c2+o]+inference.Dot(W1[(c2+o)*H1+c1:(c2+o+1)*H1], a1), 0)
			}
			b := float64(ps.zc + inference.Dot(W2[bias*H2+c2:(bias+1)*H2], a2))
			norm := math.Sqrt(ps.ff + b*b)
			kk := 1.0
			if norm > R {
				kk = R / norm
			}
			A := ps.spp + 2*b*ps.sp + ps.n*b*b
			B := ps.spr + b*ps.sr
			sh.sse += kk*kk*A - 2*kk*B + ps.srr
			if len(ps.idx) == 0 {
				continue // no identity input: nothing to train
			}
			pen := s2 * lb * (kk*b - ps.a30)
			du := s2*(kk*(ps.sp+ps.n*b)-ps.sr) + pen
			dz := du
			if norm > R {
				wdu := s2*(kk*A-B) + s2*le*(kk*ps.ff-ps.fa) + b*pen
				dz = kk * (du - b*wdu/(norm*norm))
			}
			dzf := float32(dz)
			// Back through the identity path: W2[bias, identity], W1[identity, identity],
			// W0[identity, profile].
			for j := 0; j < h2; j++ {
				g2[bias*H2+c2+j] += dzf * a2[j]
				da2[j] = 0
				if a2[j] > 0 {
					da2[j] = dzf * W2[bias*H2+c2+j]
				}
			}
			clear(da1[:h1])
			for o := 0; o < h2; o++ {
				dd := da2[o]
				if dd == 0 {
					continue
				}
				axpy(dd, a1, g1[(c2+o)*H1+c1:(c2+o+1)*H1])
				axpy(dd, W1[(c2+o)*H1+c1:(c2+o+1)*H1], da1[:h1])
			}
			for o := 0; o < h1; o++ {
				dd := da1[o]
				if dd == 0 || a1[o] <= 0 {
					continue
				}
				w := g0[(c1+o)*wu : (c1+o+1)*wu]
				for m, j := range ps.idx {
					w[j] += dd * ps.val[m]
				}
			}
		}
	})
	tr.sumShards(6) // the item tower is fixed
	var sse float64
	for s := range tr.shards {
		sse += tr.shards[s].sse
	}
	return sse
}
