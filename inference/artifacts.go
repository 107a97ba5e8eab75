package inference

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
)

// The artifacts layout (latest.json, versions/<v>/…, the files of a version and the rules for
// version names) is package internal/artifacts; the short names below keep this file readable.
const (
	modelKey   = artifacts.ModelKey
	cardKey    = artifacts.ModelCardKey
	userOHEKey = artifacts.UserOneHotKey
	userStdKey = artifacts.UserStdScalerKey
	itemOHEKey = artifacts.ItemOneHotKey
	itemStdKey = artifacts.ItemStdScalerKey
)

// ModelCard is model/model_card.json: what the model is, what it was trained on, how well it
// did, and the checksum of every other file of the version. Everything in it except Created,
// TrainSeconds and Source is a function of the training data and the config.
type ModelCard struct {
	Version         string       `json:"version"`
	Created         time.Time    `json:"created"`
	TrainSeconds    float64      `json:"train_seconds"`
	Source          string       `json:"source,omitempty"` // e.g. the ETL manifest's URL
	TrainingRows    int          `json:"training_rows"`
	Users           int          `json:"users"`
	Items           int          `json:"items"`
	Metrics         Metrics      `json:"metrics"`
	UserFeatures    FeatureList  `json:"user_features"`
	ItemFeatures    FeatureList  `json:"item_features"`
	Architecture    Architecture `json:"architecture"`
	Seed            int64        `json:"seed"`
	HyperParameters TrainConfig  `json:"hyper_parameters"`
	Optimizer       string       `json:"optimizer"`
	Loss            string       `json:"loss"`
	TensorNames     []string     `json:"tensors"`
	// Files maps each file of the version (except this card) to its SHA-256, hex.
	Files            map[string]string `json:"files"`
	EmbeddingFormats string            `json:"embedding_format"`
}

// FeatureList names one tower's inputs.
type FeatureList struct {
	Categorical []string `json:"categorical"`
	Numeric     []string `json:"numeric"`
	InputWidth  int      `json:"input_width"`
}

// Architecture is the tower shape and how its outputs become embeddings.
type Architecture struct {
	Layers       []string `json:"layers"`
	EmbeddingDim int      `json:"embedding_dim"`
	Output       string   `json:"output"`
	// Head is how the towers' raw outputs become the embeddings (HeadBias). Cards written
	// before it existed have none, which means HeadUnit.
	Head Head `json:"head,omitempty"`
}

// tensorNames lists the safetensors tensors of a tower side in the file's order.
func tensorNames() []string {
	var names []string
	for _, side := range []string{"item", "user"} {
		for _, idx := range []string{"0", "2", "4"} {
			names = append(names, side+"."+idx+".bias", side+"."+idx+".weight")
		}
	}
	slices.Sort(names)
	return names
}

// towerTensors maps tensor names to the tower's slices and shapes.
func towerTensors(side string, t *Tower) map[string]tensorRef {
	m := map[string]tensorRef{}
	for l, idx := range []string{"0", "2", "4"} {
		d := &t.Layers[l]
		m[side+"."+idx+".weight"] = tensorRef{data: d.W, shape: []int{d.Out, d.In}}
		m[side+"."+idx+".bias"] = tensorRef{data: d.B, shape: []int{d.Out}}
	}
	return m
}

type tensorRef struct {
	data  []float32
	shape []int
}

type stHeaderEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// EncodeSafetensors writes both towers in the safetensors format: an 8-byte little-endian
// header length, a JSON header {name: {dtype: "F32", shape, data_offsets}} padded with spaces
// to a multiple of 8 bytes, then the tensors' little-endian float32 data in name order.
func EncodeSafetensors(user, item *Tower) []byte {
	all := towerTensors("user", user)
	for k, v := range towerTensors("item", item) {
		all[k] = v
	}
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int64
	for _, name := range tensorNames() {
		t := all[name]
		n := int64(len(t.data)) * 4
		header[name] = stHeaderEntry{DType: "F32", Shape: t.shape, DataOffsets: [2]int64{off, off + n}}
		off += n
	}
	hj, _ := json.Marshal(header) // map keys are sorted: the bytes are deterministic
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	out := make([]byte, 8, 8+len(hj)+int(off))
	binary.LittleEndian.PutUint64(out, uint64(len(hj)))
	out = append(out, hj...)
	for _, name := range tensorNames() {
		for _, v := range all[name].data {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	}
	return out
}

// maxHeader bounds the safetensors JSON header (the format's own limit is 100 MB).
const maxHeader = 100 << 20

// DecodeSafetensors reads towers with the given input widths from a safetensors file. Every
// expected tensor must be present with dtype F32 and the expected shape, and no other tensor
// may be; the error names the first mismatch.
func DecodeSafetensors(b []byte, userIn, itemIn int) (user, item *Tower, err error) {
	if len(b) < 8 {
		return nil, nil, fmt.Errorf("safetensors: %d bytes, too short for the header length", len(b))
	}
	hl := binary.LittleEndian.Uint64(b[:8])
	if hl > maxHeader || hl > uint64(len(b)-8) {
		return nil, nil, fmt.Errorf("safetensors: header length %d exceeds the file (%d bytes)", hl, len(b))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+hl], &raw); err != nil {
		return nil, nil, fmt.Errorf("safetensors: header: %w", err)
	}
	data := b[8+hl:]
	user, item = NewTower(userIn), NewTower(itemIn)
	want := towerTensors("user", user)
	for k, v := range towerTensors("item", item) {
		want[k] = v
	}
	for name := range raw {
		if _, ok := want[name]; !ok && name != "__metadata__" {
			return nil, nil, fmt.Errorf("safetensors: unexpected tensor %q", name)
		}
	}
	for _, name := range tensorNames() {
		rm, ok := raw[name]
		if !ok {
			return nil, nil, fmt.Errorf("safetensors: missing tensor %q", name)
		}
		var e stHeaderEntry
		if err := json.Unmarshal(rm, &e); err != nil {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
		}
		ref := want[name]
		if e.DType != "F32" {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: dtype %q, want F32", name, e.DType)
		}
		if !slices.Equal(e.Shape, ref.shape) {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: shape %v, want %v", name, e.Shape, ref.shape)
		}
		lo, hi := e.DataOffsets[0], e.DataOffsets[1]
		if lo < 0 || hi < lo || hi > int64(len(data)) || hi-lo != int64(len(ref.data))*4 {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] do not hold %d float32 values in %d data bytes", name, lo, hi, len(ref.data), len(data))
		}
		for i := range ref.data {
			ref.data[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[lo+int64(i)*4:]))
		}
	}
	for _, t := range []*Tower{user, item} {
		for l := range t.Layers {
			for _, v := range append(slices.Clone(t.Layers[l].W), t.Layers[l].B...) {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return nil, nil, fmt.Errorf("safetensors: non-finite weight in layer %d", l)
				}
			}
		}
	}
	return user, item, nil
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// encodeModel returns the weights and scaler files of m.
func encodeModel(m *Model) (map[string][]byte, error) {
	files := map[string][]byte{modelKey: EncodeSafetensors(m.User, m.Item)}
	for k, v := range map[string]any{userOHEKey: m.UserEnc.OneHot, userStdKey: m.UserEnc.Std, itemOHEKey: m.ItemEnc.OneHot, itemStdKey: m.ItemEnc.Std} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", k, err)
		}
		files[k] = append(b, '\n')
	}
	return files, nil
}

// EncodeEmbeddingsCSV writes the embeddings CSV format: header "id,embedding", then one row
// per id with the vector as pgvector text "[v1,v2,...]" in one double-quoted field. Values are
// printed as the shortest decimal that reads back to the same float32.
func EncodeEmbeddingsCSV(ids []string, embs [][]float32) []byte {
	var b bytes.Buffer
	b.WriteString("id,embedding\n")
	for r, id := range ids {
		b.WriteString(id)
		b.WriteString(`,"[`)
		for i, v := range embs[r] {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatFloat(float64(v), 'g', -1, 32))
		}
		b.WriteString("]\"\n")
	}
	return b.Bytes()
}

// Publish writes a trained model as a new artifacts version: weights, scalers, model card and
// both embeddings files (every user of res.Users, every item of res.Items) under
// versions/<version>/, then latest.json. Objects are written one by one (each atomically) and
// the pointer last, so a reader following latest.json never sees a partial version. The
// version is content-addressed (a hash of the files' checksums, artifacts.ContentVersion), so
// publishing the same model again rewrites identical files. card supplies Created, TrainSeconds and Source; Publish fills
// the rest. It returns the version.
func Publish(ctx context.Context, store objstore.Store, res *TrainResult, cfg TrainConfig, card ModelCard) (string, error) {
	files, err := encodeModel(res.Model)
	if err != nil {
		return "", err
	}
	m := res.Model
	uids, uf := make([]string, len(res.Users)), make([]UserFeatures, len(res.Users))
	for i, u := range res.Users {
		uids[i], uf[i] = strconv.FormatInt(u.CustomerNumber, 10), u.Features
	}
	iids := make([]string, len(res.Items))
	for i, it := range res.Items {
		iids[i] = it.ProductCode
	}
	files[artifacts.UserEmbeddingsKey] = EncodeEmbeddingsCSV(uids, m.UserEmbeddings(uf))
	files[artifacts.ItemEmbeddingsKey] = EncodeEmbeddingsCSV(iids, m.PublishedItemEmbeddings(res.Items))
	card.Files = map[string]string{}
	for _, k := range artifacts.HashedKeys() {
		card.Files[k] = sha256Hex(files[k])
	}
	v := artifacts.ContentVersion(card.Files)
	card.Version = v
	card.TrainingRows = res.Metrics.Rows
	card.Users, card.Items = len(res.Users), len(res.Items)
	card.Metrics = res.Metrics
	card.UserFeatures = FeatureList{Categorical: m.UserEnc.OneHot.Features, Numeric: UserNumeric, InputWidth: m.UserEnc.Width()}
	card.ItemFeatures = FeatureList{Categorical: ItemCategorical, Numeric: ItemNumeric, InputWidth: m.ItemEnc.Width()}
	card.Architecture = Architecture{Layers: []string{"Dense(256, ReLU)", "Dense(128, ReLU)", "Dense(32)"}, EmbeddingDim: EmbeddingDim, Head: m.Head,
		Output: fmt.Sprintf("user z, item y (raw tower outputs): user embedding u = [z[0:%d] and z[%d] scaled together to length <= sqrt(1 - c^2) when longer, c], item embedding v = [y[0:%d], 1, y[%d]], c = %g; score = dot(u, v) = z·y (first %d) + user bias + c * item bias; stars = clamp(2*score + 3, 1, 5)",
			InteractionDim, UserBiasIndex, InteractionDim, ItemBiasIndex, ItemBiasWeight, InteractionDim)}
	card.Seed = cfg.Seed
	card.HyperParameters = cfg
	card.Optimizer = fmt.Sprintf("AdamW(beta1=%g, beta2=%g, eps=%g, decoupled weight_decay=%g); early stopping on %g of each fit's ratings, patience %d", adamBeta1, adamBeta2, adamEps, cfg.WeightDecay, earlyStoppingShare, cfg.Patience)
	card.Loss = "MSE against the rating min-max scaled from [1, 5] to [-1, 1]"
	card.TensorNames = tensorNames()
	card.EmbeddingFormats = "csv: id,embedding; embedding is pgvector text [v1,...,v32]"
	cb, err := json.MarshalIndent(card, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode model card: %w", err)
	}
	files[cardKey] = append(cb, '\n')

	prefix := artifacts.VersionPrefix(v)
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := store.Put(ctx, objstore.Join(prefix, k), bytes.NewReader(files[k])); err != nil {
			return "", fmt.Errorf("publish version %s: %w", v, err)
		}
	}
	// The pointer goes last: until it is written, readers keep serving the previous version.
	if err := artifacts.WriteLatest(ctx, store, v); err != nil {
		return "", fmt.Errorf("publish version %s: %w", v, err)
	}
	return v, nil
}

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
	for k, dst := range map[string]any{userOHEKey: &uohe, userStdKey: &ustd, itemOHEKey: &iohe, itemStdKey: &istd} {
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
	userEnc, err := newEncoder("user", &uohe, &ustd, userCat, UserNumeric)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", at("scalers/user_*.json"), err)
	}
	itemEnc, err := newEncoder("item", &iohe, &istd, ItemCategorical, ItemNumeric)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", at("scalers/item_*.json"), err)
	}
	user, item, err := DecodeSafetensors(files[modelKey], userEnc.Width(), itemEnc.Width())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", at(modelKey), err)
	}
	var card ModelCard
	if err := json.Unmarshal(files[cardKey], &card); err != nil {
		return nil, fmt.Errorf("%s: %w", at(cardKey), err)
	}
	if card.Version != v {
		return nil, fmt.Errorf("%s: version %q, want %q: %w", at(cardKey), card.Version, v, ErrVersionMismatch)
	}
	// The card records every file's checksum; check the files read here against it, and a
	// content-addressed name against the recorded checksums (the embeddings CSVs are not read
	// here: the embeddings loader checksums those).
	if card.Files != nil || artifacts.ContentAddressed(v) {
		for _, k := range []string{modelKey, userOHEKey, userStdKey, itemOHEKey, itemStdKey} {
			if got, want := sha256Hex(files[k]), card.Files[k]; got != want {
				return nil, fmt.Errorf("%s: sha256 %s, model card records %q: %w", at(k), got, want, ErrVersionMismatch)
			}
		}
	}
	if artifacts.ContentAddressed(v) {
		if got := artifacts.ContentVersion(card.Files); got != v {
			return nil, fmt.Errorf("%s: recorded checksums name version %s: %w", at(cardKey), got, ErrVersionMismatch)
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
		return nil, fmt.Errorf("%s: unknown head %q (want %q or %q)", at(cardKey), card.Architecture.Head, HeadBias, HeadUnit)
	}
	m.Version, m.Metadata = v, card
	return m, nil
}
