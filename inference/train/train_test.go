package train_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/inference/train/traintest"
	"github.com/recstream/recstream/internal/artifacts"
)

func TestSameSeedSameArtifacts(t *testing.T) {
	ex := traintest.LabExamples(t)
	res1 := traintest.RealModel(t)
	// Reversed input order and another run: the examples are sorted before the seeded split.
	rev := make([]train.Example, len(ex))
	for i, e := range ex {
		rev[len(ex)-1-i] = e
	}
	res2, err := train.Train(context.Background(), rev, inference.DefaultConfig().Train, nil)
	if err != nil {
		t.Fatal(err)
	}
	s1, d1 := traintest.DirStore(t)
	s2, d2 := traintest.DirStore(t)
	v1, v2 := traintest.Publish(t, s1, res1), traintest.Publish(t, s2, res2)
	if v1 != v2 {
		t.Fatalf("versions %s and %s differ", v1, v2)
	}
	for _, key := range []string{artifacts.ModelKey, artifacts.UserOneHotKey, artifacts.UserStdScalerKey, artifacts.ItemOneHotKey, artifacts.ItemStdScalerKey, artifacts.ItemEmbeddingsKey, artifacts.UserEmbeddingsKey, artifacts.LatestKey} {
		p := filepath.FromSlash(key)
		if key != artifacts.LatestKey {
			p = filepath.Join("versions", v1, p)
		}
		a, err1 := os.ReadFile(filepath.Join(d1, p))
		b, err2 := os.ReadFile(filepath.Join(d2, p))
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s differs between two runs with the same seed (%v, %v)", key, err1, err2)
		}
	}
	// The model card differs only in when the run happened.
	var c1, c2 inference.ModelCard
	for p, c := range map[string]*inference.ModelCard{d1: &c1, d2: &c2} {
		b, err := os.ReadFile(filepath.Join(p, "versions", v1, filepath.FromSlash(artifacts.ModelCardKey)))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, c); err != nil {
			t.Fatal(err)
		}
	}
	c1.Created, c2.Created, c1.TrainSeconds, c2.TrainSeconds = time.Time{}, time.Time{}, 0, 0
	j1, _ := json.Marshal(c1)
	j2, _ := json.Marshal(c2)
	if !bytes.Equal(j1, j2) {
		t.Fatalf("model cards differ:\n%s\n%s", j1, j2)
	}

	// Another seed gives another version.
	cfg := inference.DefaultConfig().Train
	cfg.Seed++
	cfg.Epochs = 1
	res3, err := train.Train(context.Background(), ex, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v3 := traintest.Publish(t, s1, res3); v3 == v1 {
		t.Fatalf("seed %d and %d gave the same version %s", cfg.Seed-1, cfg.Seed, v1)
	}
}

func TestTrainRejectsBadExamples(t *testing.T) {
	good := train.Example{CustomerNumber: 1, ProductCode: "S1", Rating: 3, User: inference.UserFeatures{City: "a", Country: "b"}, Item: inference.ItemFeatures{ProductLine: "x", ProductScale: "1:10"}}
	dup := []train.Example{good, good}
	bad := good
	bad.Rating = 7
	tests := []struct {
		name string
		ex   []train.Example
		want string
	}{
		{"none", nil, "no ratings"},
		{"duplicate pair", dup, "customer 1 rated product S1 twice"},
		{"rating out of range", []train.Example{bad}, "rating 7 is outside [1, 5]"},
		{"too few to split", []train.Example{good}, "too few"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := train.Train(context.Background(), tc.ex, inference.DefaultConfig().Train, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestMaxDurationKeepsBestWeights: with a clock that runs out during training, every fit's
// stages stop early, the run still returns a model (the stages' best weights so far), and
// the metrics (so the model card) name the stages cut short and the bound.
func TestMaxDurationKeepsBestWeights(t *testing.T) {
	ex := traintest.LabExamples(t)
	r, err := train.NewRatings(ex)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { clock = clock.Add(time.Millisecond); return clock } // 1 ms per reading
	var limitedDone int
	res, err := train.TrainRatings(context.Background(), r, inference.DefaultConfig().Train, train.Options{
		MaxDuration: 60 * time.Millisecond, Now: now,
		Progress: func(p train.Progress) {
			if p.Done && p.TimeLimited {
				limitedDone++
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := res.Metrics
	if m.MaxDurationSeconds != 0.06 || limitedDone == 0 || !strings.Contains(m.TimeLimited, "final content: stopped after") {
		t.Fatalf("max duration %g s, %d stages reported time-limited, time_limited %q", m.MaxDurationSeconds, limitedDone, m.TimeLimited)
	}
	if strings.Count(m.TimeLimited, ";")+1 != limitedDone {
		t.Fatalf("time_limited %q names other stages than the %d reported", m.TimeLimited, limitedDone)
	}
	if m.PersonalEpochs >= inference.DefaultConfig().Train.Epochs || !(m.Warm.ModelRMSE > 0) {
		t.Fatalf("metrics %+v", m)
	}
	// Without a bound nothing is time-limited.
	if full := traintest.RealModel(t).Metrics; full.TimeLimited != "" || full.MaxDurationSeconds != 0 {
		t.Fatalf("unbounded run: %q, %g", full.TimeLimited, full.MaxDurationSeconds)
	}
	// The model card says so.
	s, dir := traintest.DirStore(t)
	v := traintest.Publish(t, s, res)
	b, err := os.ReadFile(filepath.Join(dir, "versions", v, filepath.FromSlash(artifacts.ModelCardKey)))
	if err != nil || !strings.Contains(string(b), `"time_limited": "warm content: stopped after`) || !strings.Contains(string(b), `"max_duration_seconds": 0.06`) {
		t.Fatalf("model card (%v):\n%s", err, b)
	}
}
