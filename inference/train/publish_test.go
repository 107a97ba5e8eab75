package train_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/inference/train/traintest"
	"github.com/recstream/recstream/internal/artifacts"
)

func TestSaveLoadRoundTripIsBitExact(t *testing.T) {
	res := traintest.RealModel(t)
	s, dir := traintest.DirStore(t)
	v := traintest.Publish(t, s, res)
	if !artifacts.ContentAddressed(v) {
		t.Fatalf("version %q is not content-addressed", v)
	}
	for _, version := range []string{"latest", v} {
		m, err := inference.LoadModel(context.Background(), s, version)
		if err != nil {
			t.Fatal(err)
		}
		if m.Version != v || m.Metadata.Version != v || m.Metadata.Metrics != res.Metrics {
			t.Fatalf("loaded version %q card %+v", m.Version, m.Metadata)
		}
		for _, pair := range [][2]*inference.Tower{{m.User, res.Model.User}, {m.Item, res.Model.Item}} {
			for l := range pair[0].Layers {
				if !traintest.BitsEqual(pair[0].Layers[l].W, pair[1].Layers[l].W) || !traintest.BitsEqual(pair[0].Layers[l].B, pair[1].Layers[l].B) {
					t.Fatalf("layer %d differs after round trip", l)
				}
			}
		}
		// Same encoders: identical embeddings for every training user and item.
		uf := make([]inference.UserFeatures, len(res.Users))
		for i, u := range res.Users {
			uf[i] = u.Features
		}
		got, want := m.UserEmbeddings(uf), res.Model.UserEmbeddings(uf)
		for i := range got {
			if !traintest.BitsEqual(got[i], want[i]) {
				t.Fatalf("user %d embedding differs after round trip", res.Users[i].CustomerNumber)
			}
		}
	}
	// The embeddings CSV round-trips float32 exactly and has one row per item.
	b, err := os.ReadFile(filepath.Join(dir, "versions", v, "embeddings", "item_embeddings.csv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if lines[0] != "id,embedding" || len(lines) != len(res.Items)+1 {
		t.Fatalf("item csv: header %q, %d lines for %d items", lines[0], len(lines), len(res.Items))
	}
	embs := train.PublishedItemEmbeddings(res.Model, res.Items)
	for i, line := range lines[1:] {
		id, vec := parseEmbeddingLine(t, line)
		if id != res.Items[i].ProductCode || !traintest.BitsEqual(vec, embs[i]) {
			t.Fatalf("item csv line %d: %s differs from the model's embedding", i+2, id)
		}
	}
}

func parseEmbeddingLine(t testing.TB, line string) (string, []float32) {
	t.Helper()
	id, rest, ok := strings.Cut(line, `,"[`)
	if !ok || !strings.HasSuffix(rest, `]"`) {
		t.Fatalf("bad embeddings line %q", line)
	}
	var out []float32
	for _, f := range strings.Split(strings.TrimSuffix(rest, `]"`), ",") {
		v, err := strconv.ParseFloat(f, 32)
		if err != nil {
			t.Fatalf("bad value %q: %v", f, err)
		}
		out = append(out, float32(v))
	}
	return id, out
}
