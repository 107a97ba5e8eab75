package inference

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// UserFeatures are the raw user-side inputs of the user tower, as they appear in the training
// join and in a user-activity event. State and postal code are not model inputs.
type UserFeatures struct {
	City        string
	Country     string
	CreditLimit float64
}

// ItemFeatures are the raw item-side inputs of the item tower (one product).
type ItemFeatures struct {
	ProductLine     string
	ProductScale    string
	QuantityInStock float64
	BuyPrice        float64
	MSRP            float64
}

// Feature names, in the column order the encoders use. They are written to the scaler JSON
// files and the model card, and checked on load.
//
// The user's "profile" (ProfileKey: city, country and credit limit together, which identify a
// customer in practice) is a category too: it lets the user tower recognise a customer it was
// trained on. A profile no training customer has encodes as an all-zero block, like an unknown
// city, and then the user tower's identity units contribute nothing (see IdentityHidden1).
var (
	UserCategorical = []string{"city", "country", ProfileFeature}
	UserNumeric     = []string{"creditLimit"}
	ItemCategorical = []string{"productLine", "productScale"}
	ItemNumeric     = []string{"quantityInStock", "buyPrice", "MSRP"}
)

// ProfileFeature names the profile category.
const ProfileFeature = "profile"

// legacyUserCategorical are the user one-hot features of versions published before the
// profile category; such versions still load (the list is a prefix of UserCategorical).
var legacyUserCategorical = []string{"city", "country"}

// ProfileKey is a customer's profile category: the normalised city and country and the credit
// limit with two decimals, joined by "|" ("nantes|france|21000.00"; Python:
// f"{city.strip().lower()}|{country.strip().lower()}|{credit:.2f}"). A credit limit no
// DECIMAL(10,2) can hold (not finite, or 1e10 or more in magnitude) gives no profile ("").
func ProfileKey(u UserFeatures) string {
	if !(math.Abs(u.CreditLimit) < 1e10) {
		return ""
	}
	return NormalizeCategory(u.City) + "|" + NormalizeCategory(u.Country) + "|" + strconv.FormatFloat(u.CreditLimit, 'f', 2, 64)
}

// Categorical returns the user's categorical inputs in UserCategorical order (raw; the encoder
// normalises them).
func (u UserFeatures) Categorical() []string {
	return []string{u.City, u.Country, ProfileKey(u)}
}

// Numeric returns the user's numeric inputs in UserNumeric order.
func (u UserFeatures) Numeric() []float64 { return []float64{u.CreditLimit} }

// Categorical returns the item's categorical inputs in ItemCategorical order (raw; the encoder
// normalises them).
func (i ItemFeatures) Categorical() []string { return []string{i.ProductLine, i.ProductScale} }

// Numeric returns the item's numeric inputs in ItemNumeric order.
func (i ItemFeatures) Numeric() []float64 {
	return []float64{i.QuantityInStock, i.BuyPrice, i.MSRP}
}

// NormalizeCategory is the text normalisation applied before one-hot encoding: surrounding
// white space stripped, then lower-cased (Python's str.strip().lower()).
func NormalizeCategory(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// OneHotEncoder encodes several categorical columns, each against a fixed, ordered category
// list, like scikit-learn's OneHotEncoder(handle_unknown="ignore"): the output is the
// concatenation of one indicator block per column, and a value not in its column's list
// encodes as an all-zero block. Its JSON form is the scalers/*_ohe.json artifact.
type OneHotEncoder struct {
	// Features names the columns, in order.
	Features []string `json:"features"`
	// Categories[c] is column c's normalised categories in output order (sorted when fitted).
	Categories [][]string `json:"categories"`

	index []map[string]int // built by init
}

// FitOneHot learns the sorted distinct normalised categories of each column. rows[r][c] is
// row r's value of column c. Empty values (NULL) are not categories.
func FitOneHot(features []string, rows [][]string) (*OneHotEncoder, error) {
	sets := make([]map[string]bool, len(features))
	for c := range sets {
		sets[c] = map[string]bool{}
	}
	for _, row := range rows {
		for c, v := range row {
			if n := NormalizeCategory(v); n != "" {
				sets[c][n] = true
			}
		}
	}
	e := &OneHotEncoder{Features: append([]string(nil), features...), Categories: make([][]string, len(features))}
	for c, set := range sets {
		cats := make([]string, 0, len(set))
		for k := range set {
			cats = append(cats, k)
		}
		sort.Strings(cats) // byte order of UTF-8 = code point order, as numpy's unique
		e.Categories[c] = cats
	}
	if err := e.init(); err != nil {
		return nil, err
	}
	return e, nil
}

// CapCategories keeps at most max categories of column c: those of the most rows (rows[r][c] is
// row r's value, as given to FitOneHot), ties broken by category, still sorted. Values of the
// dropped categories then encode as zeros, like unknown ones. The trainer caps the profile
// column with it, which bounds the user tower's input width.
func (e *OneHotEncoder) CapCategories(c int, rows [][]string, max int) error {
	if len(e.Categories[c]) <= max {
		return nil
	}
	n := map[string]int{}
	for _, r := range rows {
		if v := NormalizeCategory(r[c]); v != "" {
			n[v]++
		}
	}
	return e.CapCategoriesCounted(c, n, max)
}

// CapCategoriesCounted is CapCategories given the number of rows of each normalised category
// of column c (the trainer counts per customer instead of holding one row per rating).
func (e *OneHotEncoder) CapCategoriesCounted(c int, n map[string]int, max int) error {
	if len(e.Categories[c]) <= max {
		return nil
	}
	cats := slices.Clone(e.Categories[c])
	slices.SortFunc(cats, func(a, b string) int { return cmp.Or(cmp.Compare(n[b], n[a]), cmp.Compare(a, b)) })
	cats = cats[:max]
	slices.Sort(cats)
	e.Categories[c] = cats
	return e.init()
}

// init validates the encoder and builds its lookup tables.
func (e *OneHotEncoder) init() error {
	if len(e.Features) == 0 || len(e.Features) != len(e.Categories) {
		return fmt.Errorf("one-hot encoder: %d features but %d category lists", len(e.Features), len(e.Categories))
	}
	e.index = make([]map[string]int, len(e.Categories))
	for c, cats := range e.Categories {
		m := make(map[string]int, len(cats))
		for i, v := range cats {
			if v == "" || v != NormalizeCategory(v) {
				return fmt.Errorf("one-hot encoder: feature %s: category %d %q is not normalised (stripped, lower case, non-empty)", e.Features[c], i, v)
			}
			if _, dup := m[v]; dup {
				return fmt.Errorf("one-hot encoder: feature %s: duplicate category %q", e.Features[c], v)
			}
			m[v] = i
		}
		e.index[c] = m
	}
	return nil
}

// Width is the number of output columns (the sum of the category list lengths).
func (e *OneHotEncoder) Width() int {
	n := 0
	for _, c := range e.Categories {
		n += len(c)
	}
	return n
}

// Encode writes the indicator blocks for values (one per feature) into dst, which must have
// Width() zeroed elements; it sets at most one 1 per feature.
func (e *OneHotEncoder) Encode(dst []float32, values []string) {
	off := 0
	for c, v := range values {
		if i, ok := e.index[c][NormalizeCategory(v)]; ok {
			dst[off+i] = 1
		}
		off += len(e.Categories[c])
	}
}

// StandardScaler standardises numeric columns: (x - mean) / scale, where scale is the
// population standard deviation, replaced by 1 when it is 0 (scikit-learn's StandardScaler).
// Its JSON form is the scalers/*_std_scaler.json artifact.
type StandardScaler struct {
	Features []string  `json:"features"`
	Mean     []float64 `json:"mean"`
	Scale    []float64 `json:"scale"`
}

// FitStandard learns mean and scale per column; rows[r][c] is row r's value of column c.
func FitStandard(features []string, rows [][]float64) *StandardScaler {
	return FitStandardWeighted(features, rows, nil)
}

// FitStandardWeighted is FitStandard where row r stands for weights[r] identical rows (nil:
// every weight is 1): the trainer fits on each distinct customer or product weighted by its
// number of ratings, instead of on one row per rating.
func FitStandardWeighted(features []string, rows [][]float64, weights []float64) *StandardScaler {
	n := len(features)
	s := &StandardScaler{Features: append([]string(nil), features...), Mean: make([]float64, n), Scale: make([]float64, n)}
	w := func(r int) float64 {
		if weights == nil {
			return 1
		}
		return weights[r]
	}
	var total float64
	for r := range rows {
		total += w(r)
	}
	if len(rows) == 0 || !(total > 0) {
		for c := range s.Scale {
			s.Scale[c] = 1
		}
		return s
	}
	for r, row := range rows {
		for c, v := range row {
			s.Mean[c] += w(r) * v
		}
	}
	for c := range s.Mean {
		s.Mean[c] /= total
	}
	for r, row := range rows {
		for c, v := range row {
			d := v - s.Mean[c]
			s.Scale[c] += w(r) * d * d
		}
	}
	for c := range s.Scale {
		s.Scale[c] = math.Sqrt(s.Scale[c] / total)
		if s.Scale[c] == 0 {
			s.Scale[c] = 1
		}
	}
	return s
}

func (s *StandardScaler) validate() error {
	if len(s.Features) == 0 || len(s.Mean) != len(s.Features) || len(s.Scale) != len(s.Features) {
		return fmt.Errorf("standard scaler: %d features, %d means, %d scales", len(s.Features), len(s.Mean), len(s.Scale))
	}
	for c := range s.Features {
		if math.IsNaN(s.Mean[c]) || math.IsInf(s.Mean[c], 0) {
			return fmt.Errorf("standard scaler: feature %s: mean is not finite", s.Features[c])
		}
		if !(s.Scale[c] > 0) || math.IsInf(s.Scale[c], 0) {
			return fmt.Errorf("standard scaler: feature %s: scale must be finite and > 0, got %g", s.Features[c], s.Scale[c])
		}
	}
	return nil
}

// Encode writes the standardised values into dst (len(Features) elements).
//
// The result is clipped to ±MaxStandardized (and a NaN, which only a NaN input can give, is 0):
// the towers' float32 arithmetic then stays finite for any finite input, however far outside
// the training data (a credit limit of 1e12 against a scale of 4e4 is 2.5e7 standard
// deviations; unclipped extremes overflowed float32 and made NaN embeddings that PostgreSQL
// refuses). No real value comes near the bound.
func (s *StandardScaler) Encode(dst []float32, values []float64) {
	for c, v := range values {
		z := (v - s.Mean[c]) / s.Scale[c]
		switch {
		case z != z: // NaN
			z = 0
		case z > MaxStandardized:
			z = MaxStandardized
		case z < -MaxStandardized:
			z = -MaxStandardized
		}
		dst[c] = float32(z)
	}
}

// MaxStandardized bounds a standardised input (in standard deviations of the training data).
const MaxStandardized = 1e4

// Encoder turns one side's raw features into the tower's input vector: the one-hot blocks
// followed by the standardised numbers.
type Encoder struct {
	OneHot *OneHotEncoder
	Std    *StandardScaler
}

// NewEncoder validates the pair against the expected feature names (cat and num; side names
// the tower in errors). cat may also be a prefix of the values the encoder is given
// (legacyUserCategorical): encode uses the first len(cat) categorical values. The trainer
// builds its encoders with it and the model loader its loaded ones.
func NewEncoder(side string, ohe *OneHotEncoder, std *StandardScaler, cat, num []string) (Encoder, error) {
	if ohe == nil || std == nil {
		return Encoder{}, fmt.Errorf("%s encoder: missing one-hot encoder or scaler", side)
	}
	if err := ohe.init(); err != nil {
		return Encoder{}, fmt.Errorf("%s %w", side, err)
	}
	if err := std.validate(); err != nil {
		return Encoder{}, fmt.Errorf("%s %w", side, err)
	}
	if !equalStrings(ohe.Features, cat) {
		return Encoder{}, fmt.Errorf("%s one-hot encoder: features %q, want %q", side, ohe.Features, cat)
	}
	if !equalStrings(std.Features, num) {
		return Encoder{}, fmt.Errorf("%s standard scaler: features %q, want %q", side, std.Features, num)
	}
	return Encoder{OneHot: ohe, Std: std}, nil
}

// Width is the tower's input width.
func (e Encoder) Width() int { return e.OneHot.Width() + len(e.Std.Features) }

func (e Encoder) encode(dst []float32, cat []string, num []float64) {
	clear(dst)
	w := e.OneHot.Width()
	e.OneHot.Encode(dst[:w], cat[:len(e.OneHot.Features)])
	e.Std.Encode(dst[w:], num)
}

// EncodeUser writes one user's input row into dst (Width() values). The trainer encodes
// customers one at a time: a dense matrix of every customer is customers × profiles wide.
func (e Encoder) EncodeUser(dst []float32, u UserFeatures) {
	e.encode(dst, u.Categorical(), u.Numeric())
}

// EncodeItem writes one item's input row into dst (Width() values).
func (e Encoder) EncodeItem(dst []float32, it ItemFeatures) {
	e.encode(dst, it.Categorical(), it.Numeric())
}

// EncodeUsers returns the user tower's input matrix, len(users) rows of Width() values.
func (e Encoder) EncodeUsers(users []UserFeatures) []float32 {
	w := e.Width()
	out := make([]float32, len(users)*w)
	for r, u := range users {
		e.encode(out[r*w:(r+1)*w], u.Categorical(), u.Numeric())
	}
	return out
}

// EncodeItems returns the item tower's input matrix, len(items) rows of Width() values.
func (e Encoder) EncodeItems(items []ItemFeatures) []float32 {
	w := e.Width()
	out := make([]float32, len(items)*w)
	for r, it := range items {
		e.encode(out[r*w:(r+1)*w], it.Categorical(), it.Numeric())
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
