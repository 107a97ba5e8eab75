package train

import (
	"context"
	"slices"
	"testing"

	etldataset "github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/batch/seed"
	"github.com/recstream/recstream/inference"
)

// TestCustomerBatches: each pass over the customers is split into batches of whole customers
// near the asked size, every customer once per pass, in an order that changes between passes
// and is the same for the same seed.
func TestCustomerBatches(t *testing.T) {
	var rows []row
	for u := int32(0); u < 50; u++ {
		for i := int32(0); i <= u%20; i++ {
			rows = append(rows, row{u: u, i: i})
		}
	}
	const size = 100
	draw := func(seed int64) [][]int32 { // each batch's customers
		c := newCustomerBatches(rows, size, seeded(seed, 1))
		var out [][]int32
		for b := 0; b < 3*c.batches; b++ {
			batch := c.next()
			var us []int32
			for k, r := range batch {
				if k == 0 || r.u != batch[k-1].u {
					us = append(us, r.u)
				}
			}
			for _, u := range us { // whole customers
				if n := int32(len(slices.DeleteFunc(slices.Clone(batch), func(r row) bool { return r.u != u }))); n != u%20+1 {
					t.Fatalf("batch %d holds %d of customer %d's %d ratings", b, n, u, u%20+1)
				}
			}
			if len(batch) > size+20 {
				t.Fatalf("batch %d: %d ratings, asked for about %d", b, len(batch), size)
			}
			out = append(out, us)
		}
		return out
	}
	got := draw(7)
	batches := (len(rows) + size - 1) / size
	if len(got) != 3*batches {
		t.Fatalf("%d batches", len(got))
	}
	var passes [3][]int32
	for p := range passes {
		for _, us := range got[p*batches : (p+1)*batches] {
			passes[p] = append(passes[p], us...)
		}
		sorted := slices.Sorted(slices.Values(passes[p]))
		for k, u := range sorted {
			if u != int32(k) {
				t.Fatalf("pass %d: customers %v, want each of 0..49 once", p, sorted)
			}
		}
	}
	if slices.Equal(passes[0], passes[1]) {
		t.Fatalf("the order does not change between passes: %v", passes[0])
	}
	again := draw(7)
	for b := range got {
		if !slices.Equal(got[b], again[b]) {
			t.Fatalf("batch %d differs for the same seed: %v, %v", b, got[b], again[b])
		}
	}
}

// TestLargeShopBounds trains generated data with the large-shop bounds lowered to its size:
// the early-stopping customers hold about maxStopRatings ratings, the content stage steps on
// customer batches, the results are the same for the same seed, and the model still beats
// the global mean.
func TestLargeShopBounds(t *testing.T) {
	if testing.Short() {
		t.Skip("trains twice (a few seconds): not with -short")
	}
	defer func(s, b int) { maxStopRatings, autoBatchRatings = s, b }(maxStopRatings, autoBatchRatings)
	maxStopRatings, autoBatchRatings = 100, 500
	g, err := seed.NewGenerator(42, 150, 20)
	if err != nil {
		t.Fatal(err)
	}
	b := NewRatingsBuilder(0)
	if err := g.EachTrainingRow(context.Background(), func(r etldataset.TrainingRow) error { return b.Add(ExampleFromRow(r)) }); err != nil {
		t.Fatal(err)
	}
	r, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	cfg := inference.DefaultConfig().Train
	var contentEpochs int
	var res [2]*TrainResult
	for k := range res {
		contentEpochs = 0
		if res[k], err = TrainRatings(context.Background(), r, cfg, Options{Progress: func(p Progress) {
			if p.Phase == PhaseFinal && p.Stage == StageContent && !p.Begin {
				contentEpochs++
			}
		}}); err != nil {
			t.Fatal(err)
		}
	}
	m := res[0].Metrics
	if m.EarlyStoppingRows > maxStopRatings+20 || m.EarlyStoppingRows < maxStopRatings-20 {
		t.Errorf("final fit: %d early-stopping ratings, want about %d", m.EarlyStoppingRows, maxStopRatings)
	}
	if contentEpochs < 2 {
		t.Errorf("final fit: %d content epochs", contentEpochs)
	}
	if res[0].Metrics != res[1].Metrics {
		t.Errorf("two runs with the same seed differ:\n%+v\n%+v", res[0].Metrics, res[1].Metrics)
	}
	if !(m.Warm.ModelRMSE < m.Warm.GlobalMeanRMSE-0.1 && m.Cold.ModelRMSE < m.Cold.GlobalMeanRMSE-0.1) {
		t.Errorf("the model does not beat the global mean: warm %+v, cold %+v", m.Warm, m.Cold)
	}
}
