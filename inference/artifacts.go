package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
)

// The model loader. The artifacts layout (latest.json, versions/<v>/…, the files of a version,
// the checksums and the rules for version names) is package internal/artifacts; the trainer
// publishes with package train.

// ErrVersionMismatch is returned (wrapped) when a version's files do not hash to its
// content-addressed name: a corrupted file or files mixed from two versions.
var ErrVersionMismatch = errors.New("artifacts do not match their version")

// LoadModel loads and validates an artifacts version ("latest" follows latest.json): the four
// scaler files, the weights and the model card. Tensor names, dtypes and shapes must match
// the architecture and the encoders; a content-addressed version ("m-" + 12 hex digits) must
// also match the hash of its files. Errors name the file and the mismatch.
func LoadModel(ctx context.Context, store objstore.Store, version string) (*Model, error) {
	v, err := artifacts.Resolve(ctx, store, version)
	if err != nil {
		return nil, err
	}
	prefix := artifacts.VersionPrefix(v)
	files := map[string][]byte{}
	for _, k := range artifacts.ModelKeys() {
		b, err := objstore.ReadAll(ctx, store, objstore.Join(prefix, k))
		if err != nil {
			return nil, fmt.Errorf("load artifacts version %s: %w", v, err)
		}
		files[k] = b
	}
	at := func(k string) string { return store.URL(objstore.Join(prefix, k)) }
	var uohe, iohe OneHotEncoder
	var ustd, istd StandardScaler
	for k, dst := range map[string]any{artifacts.UserOneHotKey: &uohe, artifacts.UserStdScalerKey: &ustd, artifacts.ItemOneHotKey: &iohe, artifacts.ItemStdScalerKey: &istd} {
		dec := json.NewDecoder(bytes.NewReader(files[k]))
		dec.DisallowUnknownFields()
		if err := dec.Decode(dst); err != nil {
			return nil, fmt.Errorf("%s: %w", at(k), err)
		}
	}
	userCat := UserCategorical
	if equalStrings(uohe.Features, legacyUserCategorical) {
		userCat = legacyUserCategorical
	}
	userEnc, err := NewEncoder("user", &uohe, &ustd, userCat, UserNumeric)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", at("scalers/user_*.json"), err)
	}
	itemEnc, err := NewEncoder("item", &iohe, &istd, ItemCategorical, ItemNumeric)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", at("scalers/item_*.json"), err)
	}
	user, item, err := DecodeSafetensors(files[artifacts.ModelKey], userEnc.Width(), itemEnc.Width())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", at(artifacts.ModelKey), err)
	}
	var card ModelCard
	if err := json.Unmarshal(files[artifacts.ModelCardKey], &card); err != nil {
		return nil, fmt.Errorf("%s: %w", at(artifacts.ModelCardKey), err)
	}
	if card.Version != v {
		return nil, fmt.Errorf("%s: version %q, want %q: %w", at(artifacts.ModelCardKey), card.Version, v, ErrVersionMismatch)
	}
	// The card records every file's checksum; check the files read here against it, and a
	// content-addressed name against the recorded checksums (the embeddings CSVs are not read
	// here: the embeddings loader checksums those).
	if card.Files != nil || artifacts.ContentAddressed(v) {
		for _, k := range []string{artifacts.ModelKey, artifacts.UserOneHotKey, artifacts.UserStdScalerKey, artifacts.ItemOneHotKey, artifacts.ItemStdScalerKey} {
			if got, want := artifacts.Checksum(files[k]), card.Files[k]; got != want {
				return nil, fmt.Errorf("%s: sha256 %s, model card records %q: %w", at(k), got, want, ErrVersionMismatch)
			}
		}
	}
	if artifacts.ContentAddressed(v) {
		if got := artifacts.ContentVersion(card.Files); got != v {
			return nil, fmt.Errorf("%s: recorded checksums name version %s: %w", at(artifacts.ModelCardKey), got, ErrVersionMismatch)
		}
	}
	m, err := NewModel(user, item, userEnc, itemEnc)
	if err != nil {
		return nil, fmt.Errorf("artifacts version %s: %w", v, err)
	}
	switch card.Architecture.Head {
	case "", HeadUnit:
		m.Head = HeadUnit
	case HeadBias:
	default:
		return nil, fmt.Errorf("%s: unknown head %q (want %q or %q)", at(artifacts.ModelCardKey), card.Architecture.Head, HeadBias, HeadUnit)
	}
	m.Version, m.Metadata = v, card
	return m, nil
}
