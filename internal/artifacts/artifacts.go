// Package artifacts is the layout of the artifacts location (an S3 bucket/prefix or a file://
// directory): what `recstream train` publishes, what `recstream batch embeddings` loads and what
// the worker's model reloader reads. It is defined here once; every reader and writer uses it.
//
//	latest.json                                    {"version":"<v>","prefix":"versions/<v>"}, written last
//	versions/<v>/model/best_model.safetensors      the two towers' weights
//	versions/<v>/model/model_card.json             metadata and the SHA-256 of every other file
//	versions/<v>/scalers/{user_ohe,user_std_scaler,item_ohe,item_std_scaler}.json
//	versions/<v>/embeddings/{item,user}_embeddings.csv
//
// A version is servable only with its model: the embeddings alone let PostgreSQL answer
// queries, but the worker needs the model (weights and scalers) of the same version to turn an
// event's features into a user embedding. CheckModel tells whether a version has one.
package artifacts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/recstream/recstream/internal/objstore"
)

// Keys at the root of the artifacts location, and the name that follows the pointer.
const (
	// LatestKey is the pointer to the version to serve; the publisher writes it last, so it
	// only ever names a complete version.
	LatestKey = "latest.json"
	// LatestName, given where a version name is expected, means "the version latest.json names".
	// It is therefore never a version's own name.
	LatestName = "latest"
	// VersionsDir holds one folder per version: versions/<version>/.
	VersionsDir = "versions"
)

// Keys of the files of one version, relative to VersionPrefix(version).
const (
	ModelKey          = "model/best_model.safetensors"
	ModelCardKey      = "model/model_card.json"
	UserOneHotKey     = "scalers/user_ohe.json"
	UserStdScalerKey  = "scalers/user_std_scaler.json"
	ItemOneHotKey     = "scalers/item_ohe.json"
	ItemStdScalerKey  = "scalers/item_std_scaler.json"
	ItemEmbeddingsKey = "embeddings/item_embeddings.csv"
	UserEmbeddingsKey = "embeddings/user_embeddings.csv"
)

// ModelKeys returns the files a process needs to serve a version (weights, model card and the
// four scalers), in a fixed order. The embeddings are not among them: they live in PostgreSQL.
func ModelKeys() []string {
	return []string{ModelKey, ModelCardKey, UserOneHotKey, UserStdScalerKey, ItemOneHotKey, ItemStdScalerKey}
}

// HashedKeys returns the files whose SHA-256 the model card records and a content-addressed
// version name covers (every file of a version except the card), in the order ContentVersion
// hashes them.
func HashedKeys() []string {
	return []string{ItemEmbeddingsKey, UserEmbeddingsKey, ModelKey, ItemOneHotKey, ItemStdScalerKey, UserOneHotKey, UserStdScalerKey}
}

// MaxVersionLen is the longest version name.
const MaxVersionLen = 64

// versionRe is the one rule for version names: a letter or digit, then letters, digits, '.',
// '_' and '-', at most MaxVersionLen characters in all. Until the layout was defined here the
// model loader allowed 64 characters and the embeddings loader 128, with the same characters;
// this is the stricter of the two. It accepts every name recstream makes ("m-" + 12 hex digits
// from the trainer, "sha-" + 12 hex digits from the embeddings loader) and the hand-made names
// a data scientist may publish ("v20261125-1"), and it keeps a name usable as one path segment
// of an object key (no '/', never "." or "..").
var versionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateVersion reports whether v may name a version: it must match the rule above and must
// not be LatestName, which always means the pointer (a version called "latest" could be
// loaded into PostgreSQL but never served: its model would be looked up through latest.json).
func ValidateVersion(v string) error {
	if v == LatestName {
		return fmt.Errorf("artifacts version %q: %q is reserved for the latest.json pointer", v, LatestName)
	}
	if !versionRe.MatchString(v) {
		return fmt.Errorf("artifacts version %q: not a valid version name (a letter or digit, then letters, digits, '.', '_' or '-'; at most %d characters)", v, MaxVersionLen)
	}
	return nil
}

// VersionPrefix is the key prefix holding one version's files: "versions/<version>".
func VersionPrefix(version string) string { return objstore.Join(VersionsDir, version) }

// Key is the key of file (one of the *Key constants) of version: "versions/<version>/<file>".
func Key(version, file string) string { return objstore.Join(VersionPrefix(version), file) }

var contentRe = regexp.MustCompile(`^m-[0-9a-f]{12}$`)

// ContentAddressed reports whether v is a name the trainer derived from the files' content
// (ContentVersion): then the files must hash to it.
func ContentAddressed(v string) bool { return contentRe.MatchString(v) }

// Checksum is the checksum of a version's file as the model card records it (ModelCard's
// files, ContentVersion's input, CheckModel's result): its SHA-256 in lower-case hex. The
// trainer computes it when it publishes and the model loader when it checks what it read.
func Checksum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ContentVersion names a version by its content: "m-" and the first 12 hex digits of the
// SHA-256 over the lines "<key> <sha256 of the file>\n" of HashedKeys, in order. sums maps
// each key to its SHA-256 in hex.
func ContentVersion(sums map[string]string) string {
	h := sha256.New()
	for _, k := range HashedKeys() {
		fmt.Fprintf(h, "%s %s\n", k, sums[k])
	}
	return "m-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// ChecksumVersion is the name the embeddings loader gives two CSVs loaded without a version
// name (`batch embeddings --from DIR`): "sha-" and 12 hex digits of the SHA-256 of the two
// files' hex checksums. No model is ever published under such a name.
func ChecksumVersion(itemSHA, userSHA string) string {
	sum := sha256.Sum256([]byte(itemSHA + userSHA))
	return "sha-" + hex.EncodeToString(sum[:6])
}

// Latest is the content of latest.json. The published bytes are exactly
// {"version":"<v>","prefix":"versions/<v>"} and a newline (EncodeLatest).
type Latest struct {
	Version string `json:"version"`
	Prefix  string `json:"prefix"`
}

// EncodeLatest returns the bytes of latest.json naming version.
func EncodeLatest(version string) ([]byte, error) {
	if err := ValidateVersion(version); err != nil {
		return nil, err
	}
	b, err := json.Marshal(Latest{Version: version, Prefix: VersionPrefix(version)})
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// DecodeLatest parses latest.json strictly: no unknown field, a valid version name, and the
// prefix VersionPrefix(version). (The embeddings loader used to accept any relative prefix;
// the model loader never did, and the model of a version is only ever read from
// versions/<version>/, so a pointer naming another prefix would pair embeddings from one place
// with a model from another.)
func DecodeLatest(b []byte) (Latest, error) {
	var l Latest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return Latest{}, err
	}
	if err := ValidateVersion(l.Version); err != nil {
		return Latest{}, err
	}
	if want := VersionPrefix(l.Version); l.Prefix != want {
		return Latest{}, fmt.Errorf("prefix %q, want %q", l.Prefix, want)
	}
	return l, nil
}

// WriteLatest points latest.json at version (one atomic write). Call it after every file of
// the version is written.
func WriteLatest(ctx context.Context, store objstore.Store, version string) error {
	b, err := EncodeLatest(version)
	if err != nil {
		return err
	}
	return store.Put(ctx, LatestKey, bytes.NewReader(b))
}

// ReadLatest reads and checks latest.json. A missing pointer is objstore.ErrNotExist, wrapped.
func ReadLatest(ctx context.Context, store objstore.Store) (Latest, error) {
	b, err := objstore.ReadAll(ctx, store, LatestKey)
	if err != nil {
		return Latest{}, fmt.Errorf("read %s: %w", store.URL(LatestKey), err)
	}
	l, err := DecodeLatest(b)
	if err != nil {
		return Latest{}, fmt.Errorf("%s: %w", store.URL(LatestKey), err)
	}
	return l, nil
}

// Resolve returns the version that version names: for LatestName the one in latest.json,
// otherwise version itself once its name is checked. It reads at most the pointer.
func Resolve(ctx context.Context, store objstore.Store, version string) (string, error) {
	if version != LatestName {
		if err := ValidateVersion(version); err != nil {
			return "", err
		}
		return version, nil
	}
	l, err := ReadLatest(ctx, store)
	if err != nil {
		return "", err
	}
	return l.Version, nil
}

// ErrNoModel means an artifacts version has no usable model: a model file is missing, or the
// model card is unreadable or names another version. A worker cannot serve such a version.
var ErrNoModel = errors.New("no usable model")

// card is the part of model_card.json this package reads (the full card is
// inference.ModelCard).
type card struct {
	Version string            `json:"version"`
	Files   map[string]string `json:"files"`
}

// CheckModel checks that version (a name, not LatestName) has a model in store: every file of
// ModelKeys exists and the model card names this version. It returns the checksums the card
// records (file key → SHA-256 hex; nil when it records none), so a caller holding other files
// of the version, such as the embeddings, can check they are the ones the model was published
// with. It reads one listing and the card, not the weights: inference.LoadModel validates those.
// Errors wrap ErrNoModel when the model is missing or unusable; other errors (the store could
// not be read) do not.
func CheckModel(ctx context.Context, store objstore.Store, version string) (map[string]string, error) {
	if err := ValidateVersion(version); err != nil {
		return nil, err
	}
	prefix := VersionPrefix(version)
	objs, err := store.List(ctx, prefix+"/")
	if err != nil {
		return nil, fmt.Errorf("artifacts version %s: %w", version, err)
	}
	have := make(map[string]bool, len(objs))
	for _, o := range objs {
		have[o.Key] = true
	}
	for _, k := range ModelKeys() {
		if !have[Key(version, k)] {
			return nil, fmt.Errorf("artifacts version %s: %s does not exist: %w", version, store.URL(Key(version, k)), ErrNoModel)
		}
	}
	r, err := store.Get(ctx, Key(version, ModelCardKey))
	if errors.Is(err, objstore.ErrNotExist) {
		return nil, fmt.Errorf("artifacts version %s: %w: %w", version, err, ErrNoModel)
	}
	if err != nil {
		return nil, fmt.Errorf("artifacts version %s: %w", version, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("artifacts version %s: read %s: %w", version, store.URL(Key(version, ModelCardKey)), err)
	}
	var c card
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", store.URL(Key(version, ModelCardKey)), err, ErrNoModel)
	}
	if c.Version != version {
		return nil, fmt.Errorf("%s: version %q, want %q: %w", store.URL(Key(version, ModelCardKey)), c.Version, version, ErrNoModel)
	}
	return c.Files, nil
}
