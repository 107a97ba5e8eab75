package inference

import (
	"os"
	"testing"

	"github.com/recstream/recstream/internal/stacktest"
)

// labExamples reads testdata/lab/ratings_ml_training_dataset.csv, the lab's
// real joined training data.
func labExamples(t testing.TB) []Example {
	t.Helper()
	f, err := os.Open(stacktest.LabFile(t, "ratings_ml_training_dataset.csv"))
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
