package train_test

import (
	"context"
	"testing"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/batch/seed"
	"github.com/recstream/recstream/inference/train"
)

// TestSeedSpreadGenerated holds, over five seeds on generated data (the demo's 150 customers ×
// 20 ratings), that the model clearly beats every baseline on both splits; -v prints the
// README's table. About 15 s: skipped with -short.
func TestSeedSpreadGenerated(t *testing.T) {
	if testing.Short() {
		t.Skip("trains 15 models (about 15 s): not with -short")
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
	m := SeedSpread(t, ex, "generated data (batch seed --scale 150 --ratings-per-customer 20 --seed 42)")
	if m["warm model"] > m["warm user mean"]-0.02 || m["warm model"] > m["warm global mean"]-0.1 || m["warm model"] > m["warm item mean"]-0.1 {
		t.Errorf("warm: the model does not clearly beat the baselines over 5 seeds: %v", m)
	}
	if m["cold model"] > m["cold global mean"]-0.1 || m["cold model"] > m["cold item mean"]-0.1 {
		t.Errorf("cold: the model does not clearly beat the baselines over 5 seeds: %v", m)
	}
}
