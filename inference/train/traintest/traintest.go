// Package traintest gives tests a model trained on the lab's real data and a place to publish
// it: the fixtures of the tests of package train and of the packages that load and serve what
// it publishes (package inference's external tests). Only tests import it.
package traintest

import (
	"context"
	"math"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// LabExamples reads testdata/lab/ratings_ml_training_dataset.csv, the lab's real joined
// training data (2,532 ratings); it fails the test if the file does not read as that.
func LabExamples(t testing.TB) []train.Example {
	t.Helper()
	f, err := os.Open(stacktest.LabFile(t, "ratings_ml_training_dataset.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ex, err := train.ReadLabCSV(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 2532 {
		t.Fatalf("read %d ratings, want 2532", len(ex))
	}
	return ex
}

var (
	trainOnce sync.Once
	trained   *train.TrainResult
	trainErr  error
)

// RealModel trains once per test binary on the real lab data with the shipped config and
// returns that result to every caller; callers must not modify it.
func RealModel(t testing.TB) *train.TrainResult {
	t.Helper()
	ex := LabExamples(t)
	trainOnce.Do(func() {
		trained, trainErr = train.Train(context.Background(), ex, inference.DefaultConfig().Train, nil)
	})
	if trainErr != nil {
		t.Fatal(trainErr)
	}
	return trained
}

// DirStore returns a file:// store in a fresh temporary directory, and the directory.
func DirStore(t testing.TB) (objstore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := objstore.Open("file://"+dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// Publish publishes res to s with the shipped training config (source "test") and returns the
// version.
func Publish(t testing.TB, s objstore.Store, res *train.TrainResult) string {
	t.Helper()
	v, err := train.Publish(context.Background(), s, res, inference.DefaultConfig().Train, inference.ModelCard{Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// BitsEqual reports whether a and b hold the same float32 values bit for bit.
func BitsEqual(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}
