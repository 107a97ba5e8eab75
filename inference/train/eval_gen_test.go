package train_test

import (
	"context"
	"os"
	"testing"

	"github.com/recstream/recstream/batch"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
)

// TestSeedSpreadGenerated prints the evaluation over five seeds on generated data (the demo's
// 150 customers × 20 ratings), the README's figures. Only with RECSTREAM_SEED_SPREAD=1.
func TestSeedSpreadGenerated(t *testing.T) {
	if os.Getenv("RECSTREAM_SEED_SPREAD") == "" {
		t.Skip("set RECSTREAM_SEED_SPREAD=1 to print the seed-to-seed spread")
	}
	g, err := batch.NewGenerator(42, 150, 20)
	if err != nil {
		t.Fatal(err)
	}
	var ex []train.Example
	_ = g.EachTrainingRow(context.Background(), func(r batch.TrainingRow) error {
		ex = append(ex, train.Example{CustomerNumber: int64(r.CustomerNumber),
			User:        inference.UserFeatures{City: r.City, Country: r.Country, CreditLimit: r.CreditLimit},
			ProductCode: r.ProductCode,
			Item: inference.ItemFeatures{ProductLine: r.ProductLine, ProductScale: r.ProductScale,
				QuantityInStock: float64(r.QuantityInStock), BuyPrice: r.BuyPrice, MSRP: r.MSRP},
			Rating: float64(r.ProductRating)})
		return nil
	})
	SeedSpread(t, ex, "generated data (batch seed --scale 150 --ratings-per-customer 20 --seed 42)")
}
