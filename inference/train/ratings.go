package train

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/recstream/recstream/inference"
)

// Ratings is training data in columns: every distinct customer and product once, and per
// rating two int32 indexes into them and the stars. A million ratings take 12 MB this way,
// against about 130 MB as Examples (each with its own copies of the features' strings), so
// the trainer holds a shop's ratings, its splits and its fits at once.
type Ratings struct {
	// Users are sorted by customer number, Items by product code; Item.Ratings counts the
	// ratings of each product.
	Users []User
	Items []Item
	// U[k] and I[k] index Users and Items; the ratings are sorted by (customer, product).
	U, I  []int32
	Stars []float32
}

// Len is the number of ratings.
func (r *Ratings) Len() int { return len(r.U) }

// RatingsBuilder collects ratings one at a time (from the ETL's dataset reader or a CSV) into
// Ratings. A customer's (or product's) features are taken from its first rating in (customer,
// product) order, whatever order the ratings come in. It is not safe for concurrent use.
type RatingsBuilder struct {
	uIdx  map[int64]int32
	iIdx  map[string]int32
	users []User
	uSrc  []string // product code of the rating a user's features come from
	items []Item
	iSrc  []int64 // customer number of the rating an item's features come from
	u, i  []int32
	stars []float32
}

// NewRatingsBuilder returns an empty builder; sizeHint, if known, is the number of ratings.
func NewRatingsBuilder(sizeHint int) *RatingsBuilder {
	return &RatingsBuilder{uIdx: map[int64]int32{}, iIdx: map[string]int32{},
		u: make([]int32, 0, sizeHint), i: make([]int32, 0, sizeHint), stars: make([]float32, 0, sizeHint)}
}

// Add checks and adds one rating.
func (b *RatingsBuilder) Add(e Example) error {
	if !(e.Rating >= 1 && e.Rating <= 5) {
		return fmt.Errorf("train: customer %d product %s: rating %g is outside [1, 5]", e.CustomerNumber, e.ProductCode, e.Rating)
	}
	if e.ProductCode == "" {
		return fmt.Errorf("train: customer %d: empty product code", e.CustomerNumber)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"creditLimit", e.User.CreditLimit}, {"quantityInStock", e.Item.QuantityInStock}, {"buyPrice", e.Item.BuyPrice}, {"MSRP", e.Item.MSRP}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return fmt.Errorf("train: customer %d product %s: %s is not a finite number", e.CustomerNumber, e.ProductCode, f.name)
		}
	}
	if len(b.u) == math.MaxInt32 {
		return fmt.Errorf("train: more than %d ratings", math.MaxInt32)
	}
	u, ok := b.uIdx[e.CustomerNumber]
	if !ok {
		u = int32(len(b.users))
		b.uIdx[e.CustomerNumber] = u
		b.users = append(b.users, User{CustomerNumber: e.CustomerNumber, Features: e.User})
		b.uSrc = append(b.uSrc, e.ProductCode)
	} else if e.ProductCode < b.uSrc[u] {
		b.users[u].Features, b.uSrc[u] = e.User, e.ProductCode
	}
	i, ok := b.iIdx[e.ProductCode]
	if !ok {
		i = int32(len(b.items))
		b.iIdx[e.ProductCode] = i
		b.items = append(b.items, Item{ProductCode: e.ProductCode, Features: e.Item})
		b.iSrc = append(b.iSrc, e.CustomerNumber)
	} else if e.CustomerNumber < b.iSrc[i] {
		b.items[i].Features, b.iSrc[i] = e.Item, e.CustomerNumber
	}
	b.u, b.i, b.stars = append(b.u, u), append(b.i, i), append(b.stars, float32(e.Rating))
	return nil
}

// Len is the number of ratings added so far.
func (b *RatingsBuilder) Len() int { return len(b.u) }

// Finish sorts the customers, products and ratings and checks that no customer rated a
// product twice. The builder must not be used afterwards.
func (b *RatingsBuilder) Finish() (*Ratings, error) {
	if len(b.u) == 0 {
		return nil, fmt.Errorf("train: no ratings")
	}
	// Renumber users and items in sorted order.
	uOrder := make([]int32, len(b.users))
	for k := range uOrder {
		uOrder[k] = int32(k)
	}
	slices.SortFunc(uOrder, func(x, y int32) int { return cmp.Compare(b.users[x].CustomerNumber, b.users[y].CustomerNumber) })
	iOrder := make([]int32, len(b.items))
	for k := range iOrder {
		iOrder[k] = int32(k)
	}
	slices.SortFunc(iOrder, func(x, y int32) int { return cmp.Compare(b.items[x].ProductCode, b.items[y].ProductCode) })
	uNew, iNew := make([]int32, len(uOrder)), make([]int32, len(iOrder))
	r := &Ratings{Users: make([]User, len(uOrder)), Items: make([]Item, len(iOrder))}
	for n, k := range uOrder {
		uNew[k], r.Users[n] = int32(n), b.users[k]
	}
	for n, k := range iOrder {
		iNew[k], r.Items[n] = int32(n), b.items[k]
	}
	b.users, b.items, b.uIdx, b.iIdx, b.uSrc, b.iSrc = nil, nil, nil, nil, nil, nil
	// Sort the ratings by (user, item) through one packed key per rating.
	keys := make([]uint64, len(b.u))
	for k := range keys {
		keys[k] = uint64(uNew[b.u[k]])<<32 | uint64(uint32(iNew[b.i[k]]))
	}
	perm := make([]int32, len(keys))
	for k := range perm {
		perm[k] = int32(k)
	}
	slices.SortFunc(perm, func(x, y int32) int { return cmp.Compare(keys[x], keys[y]) })
	r.U, r.I, r.Stars = make([]int32, len(keys)), make([]int32, len(keys)), make([]float32, len(keys))
	for n, k := range perm {
		r.U[n], r.I[n], r.Stars[n] = int32(keys[k]>>32), int32(uint32(keys[k])), b.stars[k]
		if n > 0 && r.U[n] == r.U[n-1] && r.I[n] == r.I[n-1] {
			return nil, fmt.Errorf("train: customer %d rated product %s twice", r.Users[r.U[n]].CustomerNumber, r.Items[r.I[n]].ProductCode)
		}
		r.Items[r.I[n]].Ratings++
	}
	b.u, b.i, b.stars = nil, nil, nil
	return r, nil
}

// NewRatings builds Ratings from examples (any order).
func NewRatings(examples []Example) (*Ratings, error) {
	b := NewRatingsBuilder(len(examples))
	for _, e := range examples {
		if err := b.Add(e); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// userFeatures returns the features of users (indexes into r.Users).
func (r *Ratings) userFeatures(users []int32) []inference.UserFeatures {
	out := make([]inference.UserFeatures, len(users))
	for k, u := range users {
		out[k] = r.Users[u].Features
	}
	return out
}
