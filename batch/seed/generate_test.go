package seed

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"testing"

	"github.com/recstream/recstream/batch/dataset"
)

func TestGeneratorIsDeterministic(t *testing.T) {
	a, _ := NewGenerator(42, 500, 30)
	b, _ := NewGenerator(42, 500, 30)
	c, _ := NewGenerator(43, 500, 30)
	if !reflect.DeepEqual(a.Products(), b.Products()) || !reflect.DeepEqual(a.Employees(), b.Employees()) {
		t.Fatal("same seed, different catalogue")
	}
	var da, db []CustomerData
	_ = a.Each(context.Background(), func(d CustomerData) error { da = append(da, d); return nil })
	_ = b.Each(context.Background(), func(d CustomerData) error { db = append(db, d); return nil })
	if !reflect.DeepEqual(da, db) {
		t.Fatal("same seed, different customers")
	}
	if reflect.DeepEqual(a.CustomerData(7), c.CustomerData(7)) {
		t.Fatal("different seeds, same customer")
	}
	// Random access equals streaming.
	if got := a.CustomerData(123); !reflect.DeepEqual(got.Customer, da[123].Customer) || !reflect.DeepEqual(got.Ratings, da[123].Ratings) {
		t.Fatal("CustomerData(i) differs from Each's customer i")
	}
}

func TestGeneratorShapes(t *testing.T) {
	const customers, per = 2000, 100
	g, err := NewGenerator(42, customers, per)
	if err != nil {
		t.Fatal(err)
	}
	ratingCount := make([]int, 6)
	countries := map[string]int{}
	lines := map[string]int{}
	var total, nullState, orders int
	for i := 0; i < customers; i++ {
		d := g.CustomerData(i)
		countries[d.Customer.Country]++
		if d.Customer.State == nil {
			nullState++
		}
		seen := map[string]bool{}
		for _, r := range d.Ratings {
			if seen[r.ProductCode] {
				t.Fatalf("customer %d rated %s twice", i, r.ProductCode)
			}
			seen[r.ProductCode] = true
			ratingCount[r.Rating]++
			total++
		}
	}
	_ = g.Each(context.Background(), func(d CustomerData) error {
		orders += len(d.Orders)
		return nil
	})
	for _, p := range g.Products() {
		lines[p.Line]++
	}
	if total != customers*per {
		t.Fatalf("total ratings %d, want exactly %d", total, customers*per)
	}
	for r, want := range map[int]float64{1: 9, 2: 22, 3: 34, 4: 25, 5: 10} {
		got := 100 * float64(ratingCount[r]) / float64(total)
		if math.Abs(got-want) > 1 {
			t.Errorf("rating %d: %.1f%%, want %.0f%% ± 1", r, got, want)
		}
	}
	if countries["USA"] < countries["France"] || countries["France"] == 0 || len(countries) < 15 {
		t.Errorf("countries %v do not follow the real mix (USA most common, ~27 countries)", countries)
	}
	if share := float64(nullState) / customers; share < 0.4 || share > 0.8 {
		t.Errorf("NULL state share %.2f, real data has 73/122", share)
	}
	if len(lines) != 7 || lines["Classic Cars"] < lines["Trains"] {
		t.Errorf("product lines %v", lines)
	}
	if orders == 0 || orders > total {
		t.Errorf("%d orders for %d bought products", orders, total)
	}
}

// TestGeneratorMarginalAcrossSeedsAndSizes: the latent model's thresholds keep the real rating
// distribution (within 1 point) whatever the seed and size.
func TestGeneratorMarginalAcrossSeedsAndSizes(t *testing.T) {
	for _, tc := range []struct {
		seed         int64
		customers, r int
	}{{1, 2000, 20}, {7, 2000, 20}, {42, 1000, 50}, {99, 5000, 10}} {
		g, err := NewGenerator(tc.seed, tc.customers, tc.r)
		if err != nil {
			t.Fatal(err)
		}
		count := make([]int, 6)
		total := 0
		_ = g.EachTrainingRow(context.Background(), func(r dataset.TrainingRow) error {
			count[r.ProductRating]++
			total++
			return nil
		})
		for r, want := range map[int]float64{1: 9, 2: 22, 3: 34, 4: 25, 5: 10} {
			if got := 100 * float64(count[r]) / float64(total); math.Abs(got-want) > 1 {
				t.Errorf("seed %d, %d×%d: rating %d: %.1f%%, want %.0f%% ± 1", tc.seed, tc.customers, tc.r, r, got, want)
			}
		}
	}
}

// TestGeneratorRatingsFollowTheLatentModel: ratings carry the documented structure: customers
// with a higher credit limit rate higher, and customers with a high credit limit like large
// scales more than customers with a low one.
func TestGeneratorRatingsFollowTheLatentModel(t *testing.T) {
	g, err := NewGenerator(42, 3000, 20)
	if err != nil {
		t.Fatal(err)
	}
	type acc struct{ sum, n float64 }
	var rich, poor, richLarge, richSmall, poorLarge, poorSmall acc
	add := func(a *acc, r int) { a.sum += float64(r); a.n++ }
	_ = g.EachTrainingRow(context.Background(), func(r dataset.TrainingRow) error {
		large := r.ProductScale == "1:10" || r.ProductScale == "1:12" || r.ProductScale == "1:18"
		small := r.ProductScale == "1:50" || r.ProductScale == "1:72" || r.ProductScale == "1:700"
		switch {
		case r.CreditLimit >= 150000:
			add(&rich, r.ProductRating)
			if large {
				add(&richLarge, r.ProductRating)
			} else if small {
				add(&richSmall, r.ProductRating)
			}
		case r.CreditLimit < 60000:
			add(&poor, r.ProductRating)
			if large {
				add(&poorLarge, r.ProductRating)
			} else if small {
				add(&poorSmall, r.ProductRating)
			}
		}
		return nil
	})
	m := func(a acc) float64 { return a.sum / a.n }
	if !(m(rich)-m(poor) > 0.5) {
		t.Errorf("mean rating: credit >= 150k %.2f, < 60k %.2f; want a clear user effect", m(rich), m(poor))
	}
	if d := (m(richLarge) - m(richSmall)) - (m(poorLarge) - m(poorSmall)); !(d > 0.3) {
		t.Errorf("large-minus-small scale preference: rich %.2f, poor %.2f; want an affinity", m(richLarge)-m(richSmall), m(poorLarge)-m(poorSmall))
	}
}

func TestNewGeneratorRejectsBadSizes(t *testing.T) {
	for _, tc := range []struct{ customers, per int }{{0, 10}, {10, 0}, {-1, 5}, {10, 10001}} {
		t.Run(fmt.Sprint(tc), func(t *testing.T) {
			if _, err := NewGenerator(1, tc.customers, tc.per); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}
