package seed_test

import (
	"context"
	"strings"
	"testing"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/batch/seed"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
)

// generatedExamples is the training data `batch seed --scale n` and `batch etl` would publish.
func generatedExamples(t testing.TB, genSeed int64, n, perCustomer int) []train.Example {
	t.Helper()
	g, err := seed.NewGenerator(genSeed, n, perCustomer)
	if err != nil {
		t.Fatal(err)
	}
	var ex []train.Example
	err = g.EachTrainingRow(context.Background(), func(r dataset.TrainingRow) error {
		ex = append(ex, train.ExampleFromRow(r))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

// TestModelLearnsGeneratedStructure: on the demo's generated data (150 customers, 20 ratings
// each) the shipped training clearly beats every baseline on both splits: the latent model's
// user effect comes from the customer's features and its affinity from product line and scale,
// so the towers can learn both, for customers they have seen and for new ones.
func TestModelLearnsGeneratedStructure(t *testing.T) {
	res, err := train.Train(context.Background(), generatedExamples(t, 42, 150, 20), inference.DefaultConfig().Train, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Metrics
	var b strings.Builder
	_ = train.WriteTable(&b, m)
	t.Logf("generated data, 150 customers × 20 ratings:\n%s", b.String())
	const margin = 0.2 // stars of RMSE: "a clear margin"
	w, c := m.Warm, m.Cold
	if w.ModelRMSE > w.GlobalMeanRMSE-margin || c.ModelRMSE > c.GlobalMeanRMSE-margin {
		t.Errorf("model RMSE warm %.4f, cold %.4f: not %g below the global mean (%.4f, %.4f)", w.ModelRMSE, c.ModelRMSE, margin, w.GlobalMeanRMSE, c.GlobalMeanRMSE)
	}
	if w.ModelRMSE >= w.ItemMeanRMSE || w.ModelRMSE >= w.UserMeanRMSE-0.01 || c.ModelRMSE >= c.ItemMeanRMSE {
		t.Errorf("model does not beat the item mean (warm %.4f vs %.4f, cold %.4f vs %.4f) or the shrunk per-user mean (%.4f vs %.4f)",
			w.ModelRMSE, w.ItemMeanRMSE, c.ModelRMSE, c.ItemMeanRMSE, w.ModelRMSE, w.UserMeanRMSE)
	}
	if !(w.ModelNDCG > w.PopularityNDCG) || !(c.ModelNDCG > c.PopularityNDCG) {
		t.Errorf("NDCG@5: warm %.3f vs popularity %.3f, cold %.3f vs %.3f: the model ranks no better than popularity", w.ModelNDCG, w.PopularityNDCG, c.ModelNDCG, c.PopularityNDCG)
	}
}
