package train_test

import (
	"context"
	"os"
	"testing"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/batch/seed"
	"github.com/recstream/recstream/inference/train"
)

// TestSeedSpreadGenerated prints the evaluation over five seeds on generated data (the demo's
// 150 customers × 20 ratings), the README's figures. Only with RECSTREAM_SEED_SPREAD=1.
func TestSeedSpreadGenerated(t *testing.T) {
	if os.Getenv("RECSTREAM_SEED_SPREAD") == "" {
		t.Skip("set RECSTREAM_SEED_SPREAD=1 to print the seed-to-seed spread")
	}
	g, err := seed.NewGenerator(42, 150, 20)
	if err != nil {
		t.Fatal(err)
	}
	var ex []train.Example
	_ = g.EachTrainingRow(context.Background(), func(r dataset.TrainingRow) error {
		ex = append(ex, train.ExampleFromRow(r))
		return nil
	})
	SeedSpread(t, ex, "generated data (batch seed --scale 150 --ratings-per-customer 20 --seed 42)")
}
