package inference_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/recstream/recstream"

// trainingPackage is the training code (trainer, Adam, evaluation, dataset readers,
// publishing) and, below it, its test fixtures.
const trainingPackage = module + "/inference/train"

// TestServingDoesNotImportTraining pins the split of the issue "inference/ mixes training (a
// batch job) with serving (the stream path)": the serving packages, inference (the model, the
// loader, the Service) and worker (the stream processor that asks the Service), do not depend
// on the training package, directly or through any other package. (cmd/recstream links both:
// it is also the `recstream train` batch job.)
func TestServingDoesNotImportTraining(t *testing.T) {
	// The name must be the training package's, or the check below would pass vacuously.
	if out, err := exec.Command("go", "list", trainingPackage).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != trainingPackage {
		t.Fatalf("go list %s: %v\n%s", trainingPackage, err, out)
	}
	serving := []string{module + "/inference", module + "/worker"}
	out, err := exec.Command("go", append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, serving...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", strings.Join(serving, " "), err, out)
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
		if p == trainingPackage || strings.HasPrefix(p, trainingPackage+"/") {
			t.Errorf("the serving packages %v depend on %s", serving, p)
		}
	}
	for _, p := range serving {
		if !deps[p] {
			t.Fatalf("go list -deps did not list %s itself:\n%s", p, out)
		}
	}
}
