package inference

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
)

var (
	trainOnce sync.Once
	trained   *TrainResult
	trainErr  error
)

// realModel trains once per test binary on the real lab data with the shipped config.
func realModel(t testing.TB) *TrainResult {
	t.Helper()
	ex := labExamples(t)
	trainOnce.Do(func() { trained, trainErr = Train(context.Background(), ex, DefaultConfig().Train, nil) })
	if trainErr != nil {
		t.Fatal(trainErr)
	}
	return trained
}

func dirStore(t testing.TB) (objstore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := objstore.Open("file://"+dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func publish(t testing.TB, s objstore.Store, res *TrainResult) string {
	t.Helper()
	v, err := Publish(context.Background(), s, res, DefaultConfig().Train, ModelCard{Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSaveLoadRoundTripIsBitExact(t *testing.T) {
	res := realModel(t)
	s, dir := dirStore(t)
	v := publish(t, s, res)
	if !artifacts.ContentAddressed(v) {
		t.Fatalf("version %q is not content-addressed", v)
	}
	for _, version := range []string{"latest", v} {
		m, err := LoadModel(context.Background(), s, version)
		if err != nil {
			t.Fatal(err)
		}
		if m.Version != v || m.Metadata.Version != v || m.Metadata.Metrics != res.Metrics {
			t.Fatalf("loaded version %q card %+v", m.Version, m.Metadata)
		}
		for _, pair := range [][2]*Tower{{m.User, res.Model.User}, {m.Item, res.Model.Item}} {
			for l := range pair[0].Layers {
				if !bitsEqual(pair[0].Layers[l].W, pair[1].Layers[l].W) || !bitsEqual(pair[0].Layers[l].B, pair[1].Layers[l].B) {
					t.Fatalf("layer %d differs after round trip", l)
				}
			}
		}
		// Same encoders: identical embeddings for every training user and item.
		uf := make([]UserFeatures, len(res.Users))
		for i, u := range res.Users {
			uf[i] = u.Features
		}
		got, want := m.UserEmbeddings(uf), res.Model.UserEmbeddings(uf)
		for i := range got {
			if !bitsEqual(got[i], want[i]) {
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
	embs := res.Model.PublishedItemEmbeddings(res.Items)
	for i, line := range lines[1:] {
		id, vec := parseEmbeddingLine(t, line)
		if id != res.Items[i].ProductCode || !bitsEqual(vec, embs[i]) {
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

func bitsEqual(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

func TestLoadRejectsBadArtifacts(t *testing.T) {
	res := realModel(t)
	good := EncodeSafetensors(res.Model.User, res.Model.Item)
	hl := binary.LittleEndian.Uint64(good[:8])
	var header map[string]any
	if err := json.Unmarshal(good[8:8+hl], &header); err != nil {
		t.Fatal(err)
	}
	withHeader := func(edit func(h map[string]any)) []byte {
		h := map[string]any{}
		b, _ := json.Marshal(header)
		_ = json.Unmarshal(b, &h)
		edit(h)
		hj, _ := json.Marshal(h)
		out := binary.LittleEndian.AppendUint64(nil, uint64(len(hj)))
		return append(append(out, hj...), good[8+hl:]...)
	}
	tests := []struct {
		name string
		key  string // file under the version prefix to replace
		body []byte
		want string
	}{
		{"truncated weights", modelKey, good[:len(good)-4], `tensor "user.4.weight": data_offsets`},
		{"tiny file", modelKey, good[:5], "too short for the header length"},
		{"header length past the end", modelKey, binary.LittleEndian.AppendUint64(nil, 1<<40), "exceeds the file"},
		{"missing tensor", modelKey, withHeader(func(h map[string]any) { delete(h, "item.2.bias") }), `missing tensor "item.2.bias"`},
		{"extra tensor", modelKey, withHeader(func(h map[string]any) { h["user.6.weight"] = h["user.4.weight"] }), `unexpected tensor "user.6.weight"`},
		{"wrong dtype", modelKey, withHeader(func(h map[string]any) { h["user.0.bias"].(map[string]any)["dtype"] = "F16" }), `tensor "user.0.bias": dtype "F16", want F32`},
		{"wrong shape", modelKey, withHeader(func(h map[string]any) {
			h["user.2.weight"].(map[string]any)["shape"] = []int{128, 255}
		}), `tensor "user.2.weight": shape [128 255], want [128 256]`},
		{"flipped weight bit", modelKey, func() []byte {
			b := slices.Clone(good)
			b[len(b)-1] ^= 0x01
			return b
		}(), `best_model.safetensors: sha256 `},
		{"scaler with another category list", userOHEKey, []byte(`{"features":["city","country"],"categories":[["nantes"],["france"]]}`), `tensor "user.0.weight": shape [256 `},
		{"scaler with wrong feature names", itemStdKey, []byte(`{"features":["msrp"],"mean":[1],"scale":[1]}`), `item standard scaler: features ["msrp"]`},
		{"scaler unknown field", userStdKey, []byte(`{"features":["creditLimit"],"mean":[1],"scale":[1],"var":[1]}`), `unknown field "var"`},
		{"card of another version", cardKey, []byte(`{"version":"m-000000000000"}`), `version "m-000000000000"`},
		{"card without checksums", cardKey, nil, "model card records \"\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := dirStore(t)
			v := publish(t, s, res)
			body := tc.body
			if body == nil { // a card of the right version that records no checksums
				body = []byte(`{"version":"` + v + `"}`)
			}
			if err := s.Put(context.Background(), artifacts.Key(v, tc.key), bytes.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			_, err := LoadModel(context.Background(), s, "latest")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	t.Run("bad latest pointer", func(t *testing.T) {
		s, _ := dirStore(t)
		for body, want := range map[string]string{
			`{"version":"../x","prefix":"versions/../x"}`:     "not a valid version name",
			`{"version":"m-1","prefix":"elsewhere/m-1"}`:      `prefix "elsewhere/m-1", want "versions/m-1"`,
			`{"version":"m-1","prefix":"versions/m-1","x":1}`: `unknown field "x"`,
		} {
			if err := s.Put(context.Background(), artifacts.LatestKey, strings.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadModel(context.Background(), s, "latest"); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("latest.json %s: err = %v, want %q", body, err, want)
			}
		}
	})
	t.Run("missing version", func(t *testing.T) {
		s, _ := dirStore(t)
		if _, err := LoadModel(context.Background(), s, "m-0123456789ab"); !errors.Is(err, objstore.ErrNotExist) {
			t.Fatalf("err = %v, want ErrNotExist", err)
		}
	})
}

func FuzzDecodeSafetensors(f *testing.F) {
	u, i := NewTower(3), NewTower(2)
	f.Add(EncodeSafetensors(u, i))
	f.Add([]byte{})
	f.Add([]byte("\x02\x00\x00\x00\x00\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, i, err := DecodeSafetensors(b, 3, 2)
		if err == nil && (u.InputWidth() != 3 || i.InputWidth() != 2) {
			t.Fatal("decoded towers of the wrong width")
		}
	})
}

// TestLoadLegacyVersion: a version published before the bias head (no head in the card, city
// and country as the only user categories) still loads and embeds as it did: unit vectors.
func TestLoadLegacyVersion(t *testing.T) {
	s, _ := dirStore(t)
	ctx := context.Background()
	uohe := &OneHotEncoder{Features: []string{"city", "country"}, Categories: [][]string{{"nantes", "paris"}, {"france"}}}
	iohe := &OneHotEncoder{Features: ItemCategorical, Categories: [][]string{{"ships"}, {"1:700"}}}
	ustd := &StandardScaler{Features: UserNumeric, Mean: []float64{1000}, Scale: []float64{10}}
	istd := &StandardScaler{Features: ItemNumeric, Mean: []float64{1, 2, 3}, Scale: []float64{1, 1, 1}}
	rng := rand.New(rand.NewPCG(9, 9))
	user, item := NewTower(4), NewTower(5)
	user.initUniform(rng)
	item.initUniform(rng)
	files := map[string][]byte{modelKey: EncodeSafetensors(user, item), cardKey: []byte(`{"version":"v-legacy","architecture":{"output":"L2-normalised"}}`)}
	for k, v := range map[string]any{userOHEKey: uohe, userStdKey: ustd, itemOHEKey: iohe, itemStdKey: istd} {
		b, _ := json.Marshal(v)
		files[k] = b
	}
	for k, b := range files {
		if err := s.Put(ctx, artifacts.Key("v-legacy", k), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := LoadModel(ctx, s, "v-legacy")
	if err != nil {
		t.Fatal(err)
	}
	if m.Head != HeadUnit {
		t.Fatalf("head %q, want %q", m.Head, HeadUnit)
	}
	for _, e := range [][]float32{m.UserEmbedding(UserFeatures{City: "Paris", Country: "France", CreditLimit: 1200}),
		m.ItemEmbeddings([]ItemFeatures{{ProductLine: "Ships", ProductScale: "1:700"}})[0]} {
		var n float64
		for _, x := range e {
			n += float64(x) * float64(x)
		}
		if math.Abs(n-1) > 1e-5 {
			t.Fatalf("|e|^2 = %g, want 1", n)
		}
	}
	// An unknown head is refused.
	if err := s.Put(ctx, artifacts.Key("v-legacy", cardKey), strings.NewReader(`{"version":"v-legacy","architecture":{"head":"magic"}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadModel(ctx, s, "v-legacy"); err == nil || !strings.Contains(err.Error(), `unknown head "magic"`) {
		t.Fatalf("err = %v, want unknown head", err)
	}
}
