package train_test

import (
	"context"
	"testing"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/inference/train/traintest"
)

// BenchmarkTrainRealData: a whole `recstream train` training run (shipped config) on the
// 2,532 real ratings. Run: go test ./inference/train -run XXX -bench TrainRealData -benchtime 3x
func BenchmarkTrainRealData(b *testing.B) {
	ex := traintest.LabExamples(b)
	cfg := inference.DefaultConfig().Train
	for b.Loop() {
		if _, err := train.Train(context.Background(), ex, cfg, nil); err != nil {
			b.Fatal(err)
		}
	}
}
