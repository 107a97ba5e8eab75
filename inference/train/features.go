package train

import (
	"fmt"
	"slices"

	"github.com/recstream/recstream/inference"
)

// row is one rating of a fit: indexes into Ratings' users and items, the scaled target and
// the stars (16 bytes).
type row struct {
	u, i  int32
	y     float32
	stars float32
}

// sparseRows holds encoded tower inputs by their non-zero entries (compressed rows): a
// customer's input is as wide as the profiles (up to MaxProfiles) but has four non-zeros.
type sparseRows struct {
	off []int32 // row k is idx[off[k]:off[k+1]]
	idx []int32
	val []float32
}

func (s *sparseRows) row(k int32) ([]int32, []float32) {
	lo, hi := s.off[k], s.off[k+1]
	return s.idx[lo:hi], s.val[lo:hi]
}

// encodeSparse encodes n rows of width w (enc writes row k into a zeroed dst).
func encodeSparse(n, w int, enc func(dst []float32, k int)) sparseRows {
	dense := make([]float32, w)
	s := sparseRows{off: make([]int32, 1, n+1)}
	for k := 0; k < n; k++ {
		clear(dense)
		enc(dense, k)
		for j, v := range dense {
			if v != 0 {
				s.idx = append(s.idx, int32(j))
				s.val = append(s.val, v)
			}
		}
		s.off = append(s.off, int32(len(s.idx)))
	}
	return s
}

// dataset is one fit's encoded training data: the encoders fitted on its ratings, every
// customer and product of the Ratings encoded once (those without a rating in the fit have
// no row), and the fit's ratings as rows of indexes.
type dataset struct {
	userEnc, itemEnc inference.Encoder
	xu, xi           sparseRows
	wu, wi           int // input widths
	nUsers, nItems   int
	rows             []row // sorted by (customer, product)
	// identity marks the user input columns of the credit-limit category (see fit).
	identity []bool
}

// newDataset fits the encoders on the ratings idx of r (sorted; the encoders see features,
// never ratings) and encodes them. Each customer and product counts once per rating, as if
// the encoders were fitted on the joined rows.
func newDataset(r *Ratings, idx []int32) (*dataset, error) {
	uN, iN := make([]int, len(r.Users)), make([]int, len(r.Items))
	for _, k := range idx {
		uN[r.U[k]]++
		iN[r.I[k]]++
	}
	profileCol := slices.Index(inference.UserCategorical, inference.ProfileFeature)
	var userCat, itemCat [][]string
	var userNum, itemNum [][]float64
	var uw, iw []float64
	profiles := map[string]int{}
	for u, n := range uN {
		if n == 0 {
			continue
		}
		f := r.Users[u].Features
		cat := f.Categorical()
		userCat, userNum, uw = append(userCat, cat), append(userNum, f.Numeric()), append(uw, float64(n))
		if p := inference.NormalizeCategory(cat[profileCol]); p != "" {
			profiles[p] += n
		}
	}
	for i, n := range iN {
		if n == 0 {
			continue
		}
		f := r.Items[i].Features
		itemCat, itemNum, iw = append(itemCat, f.Categorical()), append(itemNum, f.Numeric()), append(iw, float64(n))
	}
	uohe, err := inference.FitOneHot(inference.UserCategorical, userCat)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if err := uohe.CapCategoriesCounted(profileCol, profiles, MaxProfiles); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	iohe, err := inference.FitOneHot(inference.ItemCategorical, itemCat)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	userEnc, err := inference.NewEncoder("user", uohe, inference.FitStandardWeighted(inference.UserNumeric, userNum, uw), inference.UserCategorical, inference.UserNumeric)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	itemEnc, err := inference.NewEncoder("item", iohe, inference.FitStandardWeighted(inference.ItemNumeric, itemNum, iw), inference.ItemCategorical, inference.ItemNumeric)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	d := &dataset{
		userEnc: userEnc, itemEnc: itemEnc,
		wu: userEnc.Width(), wi: itemEnc.Width(),
		nUsers: len(r.Users), nItems: len(r.Items),
		rows: make([]row, len(idx)), identity: make([]bool, userEnc.Width()),
	}
	d.xu = encodeSparse(d.nUsers, d.wu, func(dst []float32, k int) { userEnc.EncodeUser(dst, r.Users[k].Features) })
	d.xi = encodeSparse(d.nItems, d.wi, func(dst []float32, k int) { itemEnc.EncodeItem(dst, r.Items[k].Features) })
	for n, k := range idx {
		d.rows[n] = row{u: r.U[k], i: r.I[k], y: starsToScaled(float64(r.Stars[k])), stars: r.Stars[k]}
	}
	off := 0
	for c, cats := range uohe.Categories {
		if uohe.Features[c] == identityFeature {
			for j := off; j < off+len(cats); j++ {
				d.identity[j] = true
			}
		}
		off += len(cats)
	}
	return d, nil
}

// identityFeature is the user one-hot feature that recognises a known customer.
const identityFeature = inference.ProfileFeature

// MaxProfiles bounds the profile categories (and so the user tower's input width): beyond it,
// the profiles with the most ratings are kept (ties by profile) and the other customers are
// served by the content sub-network alone.
const MaxProfiles = 10000
