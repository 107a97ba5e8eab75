package inference_test

import (
	"testing"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/inference/train/traintest"
)

func benchUsers(res *train.TrainResult, n int) []inference.UserFeatures {
	out := make([]inference.UserFeatures, n)
	for i := range out {
		out[i] = res.Users[i%len(res.Users)].Features
	}
	return out
}

// BenchmarkUserTowerSingle: one user, encoding + forward pass + normalisation, as the worker
// does for a lone event. Run: go test ./inference -run XXX -bench UserTower
func BenchmarkUserTowerSingle(b *testing.B) {
	res := traintest.RealModel(b)
	u := res.Users[0].Features
	for b.Loop() {
		_ = res.Model.UserEmbedding(u)
	}
}

// BenchmarkUserTowerBatch500: 500 users in one batched call; ns/op is per batch, and the
// users/s metric is the throughput.
func BenchmarkUserTowerBatch500(b *testing.B) {
	res := traintest.RealModel(b)
	users := benchUsers(res, 500)
	for b.Loop() {
		_ = res.Model.UserEmbeddings(users)
	}
	b.ReportMetric(float64(b.N*len(users))/b.Elapsed().Seconds(), "users/s")
}
