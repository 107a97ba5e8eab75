package inference

import (
	"context"
	"testing"
)

func benchUsers(res *TrainResult, n int) []UserFeatures {
	out := make([]UserFeatures, n)
	for i := range out {
		out[i] = res.Users[i%len(res.Users)].Features
	}
	return out
}

// BenchmarkUserTowerSingle: one user, encoding + forward pass + normalisation, as the worker
// does for a lone event. Run: go test ./inference -run XXX -bench UserTower
func BenchmarkUserTowerSingle(b *testing.B) {
	res := realModel(b)
	u := res.Users[0].Features
	for b.Loop() {
		_ = res.Model.UserEmbedding(u)
	}
}

// BenchmarkUserTowerBatch500: 500 users in one batched call; ns/op is per batch, and the
// users/s metric is the throughput.
func BenchmarkUserTowerBatch500(b *testing.B) {
	res := realModel(b)
	users := benchUsers(res, 500)
	for b.Loop() {
		_ = res.Model.UserEmbeddings(users)
	}
	b.ReportMetric(float64(b.N*len(users))/b.Elapsed().Seconds(), "users/s")
}

// BenchmarkTrainRealData: a whole `recstream train` training run (shipped config) on the
// 2,532 real ratings. Run: go test ./inference -run XXX -bench TrainRealData -benchtime 3x
func BenchmarkTrainRealData(b *testing.B) {
	ex := labExamples(b)
	cfg := DefaultConfig().Train
	for b.Loop() {
		if _, err := Train(context.Background(), ex, cfg, nil); err != nil {
			b.Fatal(err)
		}
	}
}
