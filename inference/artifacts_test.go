package inference_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train/traintest"
	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
)

func TestLoadRejectsBadArtifacts(t *testing.T) {
	res := traintest.RealModel(t)
	good := inference.EncodeSafetensors(res.Model.User, res.Model.Item)
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
		{"truncated weights", artifacts.ModelKey, good[:len(good)-4], `tensor "user.4.weight": data_offsets`},
		{"tiny file", artifacts.ModelKey, good[:5], "too short for the header length"},
		{"header length past the end", artifacts.ModelKey, binary.LittleEndian.AppendUint64(nil, 1<<40), "exceeds the file"},
		{"missing tensor", artifacts.ModelKey, withHeader(func(h map[string]any) { delete(h, "item.2.bias") }), `missing tensor "item.2.bias"`},
		{"extra tensor", artifacts.ModelKey, withHeader(func(h map[string]any) { h["user.6.weight"] = h["user.4.weight"] }), `unexpected tensor "user.6.weight"`},
		{"wrong dtype", artifacts.ModelKey, withHeader(func(h map[string]any) { h["user.0.bias"].(map[string]any)["dtype"] = "F16" }), `tensor "user.0.bias": dtype "F16", want F32`},
		{"wrong shape", artifacts.ModelKey, withHeader(func(h map[string]any) {
			h["user.2.weight"].(map[string]any)["shape"] = []int{128, 255}
		}), `tensor "user.2.weight": shape [128 255], want [128 256]`},
		{"flipped weight bit", artifacts.ModelKey, func() []byte {
			b := slices.Clone(good)
			b[len(b)-1] ^= 0x01
			return b
		}(), `best_model.safetensors: sha256 `},
		{"scaler with another category list", artifacts.UserOneHotKey, []byte(`{"features":["city","country"],"categories":[["nantes"],["france"]]}`), `tensor "user.0.weight": shape [256 `},
		{"scaler with wrong feature names", artifacts.ItemStdScalerKey, []byte(`{"features":["msrp"],"mean":[1],"scale":[1]}`), `item standard scaler: features ["msrp"]`},
		{"scaler unknown field", artifacts.UserStdScalerKey, []byte(`{"features":["creditLimit"],"mean":[1],"scale":[1],"var":[1]}`), `unknown field "var"`},
		{"card of another version", artifacts.ModelCardKey, []byte(`{"version":"m-000000000000"}`), `version "m-000000000000"`},
		{"card without checksums", artifacts.ModelCardKey, nil, "model card records \"\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := traintest.DirStore(t)
			v := traintest.Publish(t, s, res)
			body := tc.body
			if body == nil { // a card of the right version that records no checksums
				body = []byte(`{"version":"` + v + `"}`)
			}
			if err := s.Put(context.Background(), artifacts.Key(v, tc.key), bytes.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			_, err := inference.LoadModel(context.Background(), s, "latest")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	t.Run("bad latest pointer", func(t *testing.T) {
		s, _ := traintest.DirStore(t)
		for body, want := range map[string]string{
			`{"version":"../x","prefix":"versions/../x"}`:     "not a valid version name",
			`{"version":"m-1","prefix":"elsewhere/m-1"}`:      `prefix "elsewhere/m-1", want "versions/m-1"`,
			`{"version":"m-1","prefix":"versions/m-1","x":1}`: `unknown field "x"`,
		} {
			if err := s.Put(context.Background(), artifacts.LatestKey, strings.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			if _, err := inference.LoadModel(context.Background(), s, "latest"); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("latest.json %s: err = %v, want %q", body, err, want)
			}
		}
	})
	t.Run("missing version", func(t *testing.T) {
		s, _ := traintest.DirStore(t)
		if _, err := inference.LoadModel(context.Background(), s, "m-0123456789ab"); !errors.Is(err, objstore.ErrNotExist) {
			t.Fatalf("err = %v, want ErrNotExist", err)
		}
	})
}

func FuzzDecodeSafetensors(f *testing.F) {
	u, i := inference.NewTower(3), inference.NewTower(2)
	f.Add(inference.EncodeSafetensors(u, i))
	f.Add([]byte{})
	f.Add([]byte("\x02\x00\x00\x00\x00\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, i, err := inference.DecodeSafetensors(b, 3, 2)
		if err == nil && (u.InputWidth() != 3 || i.InputWidth() != 2) {
			t.Fatal("decoded towers of the wrong width")
		}
	})
}

// TestLoadLegacyVersion: a version published before the bias head (no head in the card, city
// and country as the only user categories) still loads and embeds as it did: unit vectors.
func TestLoadLegacyVersion(t *testing.T) {
	s, _ := traintest.DirStore(t)
	ctx := context.Background()
	uohe := &inference.OneHotEncoder{Features: []string{"city", "country"}, Categories: [][]string{{"nantes", "paris"}, {"france"}}}
	iohe := &inference.OneHotEncoder{Features: inference.ItemCategorical, Categories: [][]string{{"ships"}, {"1:700"}}}
	ustd := &inference.StandardScaler{Features: inference.UserNumeric, Mean: []float64{1000}, Scale: []float64{10}}
	istd := &inference.StandardScaler{Features: inference.ItemNumeric, Mean: []float64{1, 2, 3}, Scale: []float64{1, 1, 1}}
	rng := rand.New(rand.NewPCG(9, 9))
	user, item := inference.NewTower(4), inference.NewTower(5)
	user.InitUniform(rng)
	item.InitUniform(rng)
	files := map[string][]byte{artifacts.ModelKey: inference.EncodeSafetensors(user, item), artifacts.ModelCardKey: []byte(`{"version":"v-legacy","architecture":{"output":"L2-normalised"}}`)}
	for k, v := range map[string]any{artifacts.UserOneHotKey: uohe, artifacts.UserStdScalerKey: ustd, artifacts.ItemOneHotKey: iohe, artifacts.ItemStdScalerKey: istd} {
		b, _ := json.Marshal(v)
		files[k] = b
	}
	for k, b := range files {
		if err := s.Put(ctx, artifacts.Key("v-legacy", k), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := inference.LoadModel(ctx, s, "v-legacy")
	if err != nil {
		t.Fatal(err)
	}
	if m.Head != inference.HeadUnit {
		t.Fatalf("head %q, want %q", m.Head, inference.HeadUnit)
	}
	for _, e := range [][]float32{m.UserEmbedding(inference.UserFeatures{City: "Paris", Country: "France", CreditLimit: 1200}),
		m.ItemEmbeddings([]inference.ItemFeatures{{ProductLine: "Ships", ProductScale: "1:700"}})[0]} {
		var n float64
		for _, x := range e {
			n += float64(x) * float64(x)
		}
		if math.Abs(n-1) > 1e-5 {
			t.Fatalf("|e|^2 = %g, want 1", n)
		}
	}
	// An unknown head is refused.
	if err := s.Put(ctx, artifacts.Key("v-legacy", artifacts.ModelCardKey), strings.NewReader(`{"version":"v-legacy","architecture":{"head":"magic"}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := inference.LoadModel(ctx, s, "v-legacy"); err == nil || !strings.Contains(err.Error(), `unknown head "magic"`) {
		t.Fatalf("err = %v, want unknown head", err)
	}
}
