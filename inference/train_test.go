package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/internal/artifacts"
)

func TestSameSeedSameArtifacts(t *testing.T) {
	ex := labExamples(t)
	res1 := realModel(t)
	// Reversed input order and another run: the examples are sorted before the seeded split.
	rev := make([]Example, len(ex))
	for i, e := range ex {
		rev[len(ex)-1-i] = e
	}
	res2, err := Train(context.Background(), rev, DefaultConfig().Train, nil)
	if err != nil {
		t.Fatal(err)
	}
	s1, d1 := dirStore(t)
	s2, d2 := dirStore(t)
	v1, v2 := publish(t, s1, res1), publish(t, s2, res2)
	if v1 != v2 {
		t.Fatalf("versions %s and %s differ", v1, v2)
	}
	for _, key := range []string{modelKey, userOHEKey, userStdKey, itemOHEKey, itemStdKey, artifacts.ItemEmbeddingsKey, artifacts.UserEmbeddingsKey, artifacts.LatestKey} {
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
	var c1, c2 ModelCard
	for p, c := range map[string]*ModelCard{d1: &c1, d2: &c2} {
		b, err := os.ReadFile(filepath.Join(p, "versions", v1, filepath.FromSlash(cardKey)))
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
	cfg := DefaultConfig().Train
	cfg.Seed++
	cfg.Epochs = 1
	res3, err := Train(context.Background(), ex, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v3 := publish(t, s1, res3); v3 == v1 {
		t.Fatalf("seed %d and %d gave the same version %s", cfg.Seed-1, cfg.Seed, v1)
	}
}

func TestTrainRejectsBadExamples(t *testing.T) {
	good := Example{CustomerNumber: 1, ProductCode: "S1", Rating: 3, User: UserFeatures{City: "a", Country: "b"}, Item: ItemFeatures{ProductLine: "x", ProductScale: "1:10"}}
	dup := []Example{good, good}
	bad := good
	bad.Rating = 7
	tests := []struct {
		name string
		ex   []Example
		want string
	}{
		{"none", nil, "no ratings"},
		{"duplicate pair", dup, "customer 1 rated product S1 twice"},
		{"rating out of range", []Example{bad}, "rating 7 is outside [1, 5]"},
		{"too few to split", []Example{good}, "too few"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Train(context.Background(), tc.ex, DefaultConfig().Train, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestTrainConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*TrainConfig)
		want string
	}{
		{func(c *TrainConfig) { c.Patience = 0 }, "patience: must be >= 1"},
		{func(c *TrainConfig) { c.BiasPenalty = -1 }, "bias_penalty"},
		{func(c *TrainConfig) { c.EmbeddingPenalty = math.NaN() }, "embedding_penalty"},
		{func(c *TrainConfig) { c.WeightDecay = 1 }, "weight_decay"},
	} {
		cfg := DefaultConfig().Train
		tc.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
}

// TestProfilesAreCapped: beyond MaxProfiles the profiles with the most ratings are kept.
func TestProfilesAreCapped(t *testing.T) {
	e, err := FitOneHot([]string{"profile"}, [][]string{{"a"}, {"b"}, {"b"}, {"c"}, {"c"}, {"c"}, {"d"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := capCategories(e, 0, [][]string{{"a"}, {"b"}, {"b"}, {"c"}, {"c"}, {"c"}, {"d"}}, 2); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(e.Categories[0]); got != "[b c]" {
		t.Fatalf("kept %s, want [b c]", got)
	}
	dst := make([]float32, 2)
	e.Encode(dst, []string{"a"})
	if dst[0] != 0 || dst[1] != 0 {
		t.Fatalf("a dropped profile encodes as %v, want zeros", dst)
	}
}

func TestReadLabCSV(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty file"},
		{"missing column", "city,country\n", `no column "customernumber"`},
		{"bad number", "customernumber,city,country,creditlimit,productcode,productline,productscale,quantityinstock,buyprice,msrp,productrating\n1,a,b,,S1,l,1:10,x,1,2,3\n", "line 2: column quantityinstock"},
		{"null city", "customernumber,city,country,creditlimit,productcode,productline,productscale,quantityinstock,buyprice,msrp,productrating\n1,,b,,S1,l,1:10,1,1,2,3\n", "line 2: column city: empty"},
		{"rating", "customernumber,city,country,creditlimit,productcode,productline,productscale,quantityinstock,buyprice,msrp,productrating\n1,a,b,,S1,l,1:10,1,1,2,0\n", "outside [1, 5]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadLabCSV(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	ex := labExamples(t)
	// First data row of the lab file: "London",,"WA1 1DP","UK","43300.00","S24_2887",...,"5","489"
	want := Example{CustomerNumber: 489, User: UserFeatures{City: "London", Country: "UK", CreditLimit: 43300}, ProductCode: "S24_2887",
		Item: ItemFeatures{ProductLine: "Classic Cars", ProductScale: "1:24", QuantityInStock: 1452, BuyPrice: 72.82, MSRP: 117.44}, Rating: 5}
	if ex[0] != want {
		t.Fatalf("first row = %+v, want %+v", ex[0], want)
	}
}

func FuzzReadLabCSV(f *testing.F) {
	f.Add("customernumber,city,country,creditlimit,productcode,productline,productscale,quantityinstock,buyprice,msrp,productrating\n\"1\",\"a\",\"b\",,S1,l,1:10,1,1,2,3\n")
	f.Add("city\n\"x")
	f.Fuzz(func(t *testing.T, s string) {
		ex, err := ReadLabCSV(strings.NewReader(s))
		if err == nil {
			for _, e := range ex {
				if !(e.Rating >= 1 && e.Rating <= 5) {
					t.Fatalf("accepted rating %g", e.Rating)
				}
			}
		}
	})
}
