package worker

import (
	"context"
	"math"
	"os"
	"sync"
	"testing"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/internal/stacktest"
)

var (
	fuzzModelOnce sync.Once
	fuzzModel     *inference.Model
	fuzzModelErr  error
)

// realModel is a two-tower model trained (one epoch) on the lab's real ratings: its encoders
// know the real cities, countries and credit-limit scale.
func realModel(t testing.TB) *inference.Model {
	t.Helper()
	path := stacktest.LabFile(t, "ratings_ml_training_dataset.csv")
	fuzzModelOnce.Do(func() {
		f, err := os.Open(path)
		if err != nil {
			fuzzModelErr = err
			return
		}
		defer f.Close()
		ex, err := train.ReadLabCSV(f)
		if err != nil {
			fuzzModelErr = err
			return
		}
		cfg := inference.DefaultConfig().Train
		cfg.Epochs = 1
		res, err := train.Train(context.Background(), ex, cfg, nil)
		if err != nil {
			fuzzModelErr = err
			return
		}
		fuzzModel = res.Model
	})
	if fuzzModelErr != nil {
		t.Fatal(fuzzModelErr)
	}
	return fuzzModel
}

// FuzzDecodeEmbeds pins the poison-pill guarantee at the model seam: for any record Decode
// accepts, the user tower's input and embedding are finite (PostgreSQL refuses a NaN vector,
// which used to stall the shard forever). The seeds are the edge values of the issue.
func FuzzDecodeEmbeds(f *testing.F) {
	m := realModel(f)
	for _, credit := range []string{"1e300", "1e38", "5e-324", "-0.0", "1e12", "999999999999.99", "0", "227600"} {
		f.Add([]byte(`{"session_id":"s","customer_number":2147483647,"city":"Nantes","country":"France","credit_limit":` + credit +
			`,"browse_history":[{"product_code":"S10_1678","quantity":"1000000","in_shopping_cart":true}]}`))
	}
	f.Add([]byte(`{"session_id":"s","customer_number":0,"city":"\ud800","country":"","credit_limit":1,"browse_history":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Decode(b, Limits{MaxBytes: 65536, MaxBrowseHistory: 100})
		if err != nil {
			return
		}
		u := inference.UserFeatures{City: ev.City, Country: ev.Country, CreditLimit: ev.CreditLimit}
		for _, x := range m.UserEnc.EncodeUsers([]inference.UserFeatures{u}) {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("non-finite tower input %v for %+v", x, ev)
			}
		}
		var norm float64
		for _, x := range m.UserEmbedding(u) {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("non-finite embedding for %+v", ev)
			}
			norm += float64(x) * float64(x)
		}
		if norm > 1.0001 {
			t.Fatalf("embedding norm² %v > 1 for %+v", norm, ev)
		}
	})
}
