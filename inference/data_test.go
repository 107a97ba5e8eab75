package inference

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/recstream/recstream/internal/stacktest"
)

// labExamples reads ../shared/data/lab-outputs/ratings_ml_training_dataset.csv, the lab's
// real joined training data.
func labExamples(t testing.TB) []Example {
	t.Helper()
	dir := stacktest.RequireSharedData(t)
	f, err := os.Open(filepath.Join(dir, "lab-outputs", "ratings_ml_training_dataset.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ex, err := ReadLabCSV(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 2532 {
		t.Fatalf("read %d ratings, want 2532", len(ex))
	}
	return ex
}
