package artifacts_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
)

func dirStore(t *testing.T) objstore.Store {
	t.Helper()
	s, err := objstore.Open("file://"+t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s objstore.Store, key, body string) {
	t.Helper()
	if err := s.Put(context.Background(), key, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
}

// The keys are the lab's layout, which published artifacts and the README document.
func TestLayoutKeys(t *testing.T) {
	for _, tc := range [][2]string{
		{artifacts.LatestKey, "latest.json"},
		{artifacts.VersionPrefix("m-e9ca892d952a"), "versions/m-e9ca892d952a"},
		{artifacts.Key("v1", artifacts.ModelKey), "versions/v1/model/best_model.safetensors"},
		{artifacts.Key("v1", artifacts.ModelCardKey), "versions/v1/model/model_card.json"},
		{artifacts.Key("v1", artifacts.UserOneHotKey), "versions/v1/scalers/user_ohe.json"},
		{artifacts.Key("v1", artifacts.UserStdScalerKey), "versions/v1/scalers/user_std_scaler.json"},
		{artifacts.Key("v1", artifacts.ItemOneHotKey), "versions/v1/scalers/item_ohe.json"},
		{artifacts.Key("v1", artifacts.ItemStdScalerKey), "versions/v1/scalers/item_std_scaler.json"},
		{artifacts.Key("v1", artifacts.ItemEmbeddingsKey), "versions/v1/embeddings/item_embeddings.csv"},
		{artifacts.Key("v1", artifacts.UserEmbeddingsKey), "versions/v1/embeddings/user_embeddings.csv"},
		// The published pointer's exact bytes (what `recstream train` has always written).
		{string(must(artifacts.EncodeLatest("m-e9ca892d952a"))), `{"version":"m-e9ca892d952a","prefix":"versions/m-e9ca892d952a"}` + "\n"},
		// The names both producers derive, unchanged by the move to this package.
		{artifacts.ChecksumVersion("a", "b"), "sha-fb8e20fc2e4c"},
		{artifacts.ContentVersion(map[string]string{}), "m-4f51be5df475"},
		// A file's checksum as the model card records it: SHA-256, lower-case hex.
		{artifacts.Checksum([]byte("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	} {
		if tc[0] != tc[1] {
			t.Errorf("got %q, want %q", tc[0], tc[1])
		}
	}
	// The version names the two producers make are valid and recognised as what they are.
	cv := artifacts.ContentVersion(map[string]string{artifacts.ModelKey: "00"})
	sv := artifacts.ChecksumVersion(strings.Repeat("a", 64), strings.Repeat("b", 64))
	for _, v := range []string{cv, sv} {
		if err := artifacts.ValidateVersion(v); err != nil {
			t.Errorf("%s: %v", v, err)
		}
	}
	if len(cv) != 14 || len(sv) != 16 || !artifacts.ContentAddressed(cv) || artifacts.ContentAddressed(sv) {
		t.Errorf("content version %q, checksum version %q", cv, sv)
	}
	// Every file the card records a checksum for, except the embeddings, is a model file.
	for _, k := range artifacts.HashedKeys() {
		if !slices.Contains(artifacts.ModelKeys(), k) && k != artifacts.ItemEmbeddingsKey && k != artifacts.UserEmbeddingsKey {
			t.Errorf("hashed key %s is neither a model file nor an embeddings file", k)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// One rule for version names: what either reader accepted before, capped at the model
// loader's 64 characters, minus the pointer's own name.
func TestVersionNameRule(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"m-e9ca892d952a", true},   // the trainer's content-addressed names
		{"sha-0123456789ab", true}, // the embeddings loader's names for bare CSVs
		{"v20261125-1", true},
		{"V1.2_rc-3", true},
		{"7", true},
		{"a..b", true}, // dots inside a segment are harmless
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false}, // the embeddings loader allowed 128; the model loader 64
		{"", false},
		{"latest", false}, // always means the pointer
		{"-x", false},
		{".hidden", false},
		{"_x", false},
		{"..", false},
		{"../x", false},
		{"a/b", false},
		{"a b", false},
		{"é", false},
		{"m-e9ca892d952a\n", false},
	} {
		err := artifacts.ValidateVersion(tc.v)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateVersion(%q) = %v, want ok=%v", tc.v, err, tc.ok)
		}
	}
}

func TestDecodeLatest(t *testing.T) {
	for _, tc := range []struct {
		body, want string // want: "" for valid, else part of the error
	}{
		{`{"version":"m-e9ca892d952a","prefix":"versions/m-e9ca892d952a"}` + "\n", ""},
		{`{"version": "v20261125-1", "prefix": "versions/v20261125-1"}`, ""},
		{`{"version":"m-1","prefix":"elsewhere/m-1"}`, `prefix "elsewhere/m-1", want "versions/m-1"`},
		{`{"version":"m-1","prefix":"versions/m-1/"}`, `want "versions/m-1"`},
		{`{"version":"m-1"}`, `prefix "", want "versions/m-1"`},
		{`{"version":"../x","prefix":"versions/../x"}`, "not a valid version name"},
		{`{"version":"latest","prefix":"versions/latest"}`, "reserved"},
		{`{"version":"m-1","prefix":"versions/m-1","x":1}`, `unknown field "x"`},
		{`not json`, "invalid character"},
	} {
		l, err := artifacts.DecodeLatest([]byte(tc.body))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.body, err)
		case tc.want == "" && l.Prefix != artifacts.VersionPrefix(l.Version):
			t.Errorf("%s: decoded %+v", tc.body, l)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err = %v, want it to mention %q", tc.body, err, tc.want)
		}
	}
}

func TestResolveVersion(t *testing.T) {
	ctx := context.Background()
	s := dirStore(t)
	// A named version needs no pointer and no I/O; "latest" needs the pointer.
	if v, err := artifacts.Resolve(ctx, s, "v7"); err != nil || v != "v7" {
		t.Fatalf("Resolve(v7) = %q, %v", v, err)
	}
	if _, err := artifacts.Resolve(ctx, s, "../x"); err == nil {
		t.Fatal("Resolve(../x) accepted")
	}
	if _, err := artifacts.Resolve(ctx, s, artifacts.LatestName); !errors.Is(err, objstore.ErrNotExist) || !strings.Contains(err.Error(), "latest.json") {
		t.Fatalf("Resolve(latest) without a pointer: %v, want ErrNotExist naming latest.json", err)
	}
	if err := artifacts.WriteLatest(ctx, s, "m-0123456789ab"); err != nil {
		t.Fatal(err)
	}
	if v, err := artifacts.Resolve(ctx, s, artifacts.LatestName); err != nil || v != "m-0123456789ab" {
		t.Fatalf("Resolve(latest) = %q, %v", v, err)
	}
	if err := artifacts.WriteLatest(ctx, s, "latest"); err == nil {
		t.Fatal("WriteLatest(latest) accepted")
	}
	put(t, s, artifacts.LatestKey, `{"version":"m-1","prefix":"other/m-1"}`)
	if _, err := artifacts.Resolve(ctx, s, artifacts.LatestName); err == nil || !strings.Contains(err.Error(), s.URL(artifacts.LatestKey)) {
		t.Fatalf("bad pointer: %v, want an error naming %s", err, s.URL(artifacts.LatestKey))
	}
}

func TestCheckModelVersion(t *testing.T) {
	ctx := context.Background()
	s := dirStore(t)
	const v = "v1"
	// Embeddings alone are no model.
	put(t, s, artifacts.Key(v, artifacts.ItemEmbeddingsKey), "id,embedding\n")
	put(t, s, artifacts.Key(v, artifacts.UserEmbeddingsKey), "id,embedding\n")
	if _, err := artifacts.CheckModel(ctx, s, v); !errors.Is(err, artifacts.ErrNoModel) || !strings.Contains(err.Error(), "best_model.safetensors") {
		t.Fatalf("embeddings only: %v, want ErrNoModel naming the weights", err)
	}
	for _, k := range artifacts.ModelKeys() {
		if k != artifacts.ItemStdScalerKey {
			put(t, s, artifacts.Key(v, k), "{}")
		}
	}
	if _, err := artifacts.CheckModel(ctx, s, v); !errors.Is(err, artifacts.ErrNoModel) || !strings.Contains(err.Error(), "item_std_scaler.json") {
		t.Fatalf("one scaler missing: %v, want ErrNoModel naming it", err)
	}
	put(t, s, artifacts.Key(v, artifacts.ItemStdScalerKey), "{}")
	if _, err := artifacts.CheckModel(ctx, s, v); !errors.Is(err, artifacts.ErrNoModel) || !strings.Contains(err.Error(), `version "", want "v1"`) {
		t.Fatalf("card of no version: %v", err)
	}
	put(t, s, artifacts.Key(v, artifacts.ModelCardKey), "{not json")
	if _, err := artifacts.CheckModel(ctx, s, v); !errors.Is(err, artifacts.ErrNoModel) {
		t.Fatalf("unreadable card: %v", err)
	}
	put(t, s, artifacts.Key(v, artifacts.ModelCardKey), `{"version":"v1","files":{"embeddings/item_embeddings.csv":"ab"}}`)
	sums, err := artifacts.CheckModel(ctx, s, v)
	if err != nil || sums[artifacts.ItemEmbeddingsKey] != "ab" {
		t.Fatalf("complete model: %v, %v", sums, err)
	}
	// Another version's files do not count.
	if _, err := artifacts.CheckModel(ctx, s, "v10"); !errors.Is(err, artifacts.ErrNoModel) {
		t.Fatalf("v10: %v", err)
	}
	if _, err := artifacts.CheckModel(ctx, s, "latest"); err == nil || errors.Is(err, artifacts.ErrNoModel) {
		t.Fatalf("CheckModel(latest): %v, want a name error", err)
	}
}
