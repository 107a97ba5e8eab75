package train

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
)

// encodeModel returns the weights and scaler files of m.
func encodeModel(m *inference.Model) (map[string][]byte, error) {
	files := map[string][]byte{artifacts.ModelKey: inference.EncodeSafetensors(m.User, m.Item)}
	for k, v := range map[string]any{artifacts.UserOneHotKey: m.UserEnc.OneHot, artifacts.UserStdScalerKey: m.UserEnc.Std, artifacts.ItemOneHotKey: m.ItemEnc.OneHot, artifacts.ItemStdScalerKey: m.ItemEnc.Std} {
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
// publishing the same model again rewrites identical files. card supplies Created,
// TrainSeconds and Source; Publish fills the rest. It returns the version.
func Publish(ctx context.Context, store objstore.Store, res *TrainResult, cfg inference.TrainConfig, card inference.ModelCard) (string, error) {
	files, err := encodeModel(res.Model)
	if err != nil {
		return "", err
	}
	m := res.Model
	uids, uf := make([]string, len(res.Users)), make([]inference.UserFeatures, len(res.Users))
	for i, u := range res.Users {
		uids[i], uf[i] = strconv.FormatInt(u.CustomerNumber, 10), u.Features
	}
	iids := make([]string, len(res.Items))
	for i, it := range res.Items {
		iids[i] = it.ProductCode
	}
	files[artifacts.UserEmbeddingsKey] = EncodeEmbeddingsCSV(uids, UserEmbeddings(m, uf))
	files[artifacts.ItemEmbeddingsKey] = EncodeEmbeddingsCSV(iids, PublishedItemEmbeddings(m, res.Items))
	card.Files = map[string]string{}
	for _, k := range artifacts.HashedKeys() {
		card.Files[k] = artifacts.Checksum(files[k])
	}
	v := artifacts.ContentVersion(card.Files)
	card.Version = v
	card.TrainingRows = res.Metrics.Rows
	card.Users, card.Items = len(res.Users), len(res.Items)
	card.Metrics = res.Metrics
	card.UserFeatures = inference.FeatureList{Categorical: m.UserEnc.OneHot.Features, Numeric: inference.UserNumeric, InputWidth: m.UserEnc.Width()}
	card.ItemFeatures = inference.FeatureList{Categorical: inference.ItemCategorical, Numeric: inference.ItemNumeric, InputWidth: m.ItemEnc.Width()}
	card.Architecture = inference.Architecture{Layers: []string{"Dense(256, ReLU)", "Dense(128, ReLU)", "Dense(32)"}, EmbeddingDim: inference.EmbeddingDim, Head: m.Head,
		Output: fmt.Sprintf("user z, item y (raw tower outputs): user embedding u = [z[0:%d] and z[%d] scaled together to length <= sqrt(1 - c^2) when longer, c], item embedding v = [y[0:%d], 1, y[%d]], c = %g; score = dot(u, v) = z·y (first %d) + user bias + c * item bias; stars = clamp(2*score + 3, 1, 5)",
			inference.InteractionDim, inference.UserBiasIndex, inference.InteractionDim, inference.ItemBiasIndex, inference.ItemBiasWeight, inference.InteractionDim)}
	card.Seed = cfg.Seed
	card.HyperParameters = cfg
	card.Optimizer = fmt.Sprintf("AdamW(beta1=%g, beta2=%g, eps=%g, decoupled weight_decay=%g); early stopping on %g of each fit's ratings, patience %d", adamBeta1, adamBeta2, adamEps, cfg.WeightDecay, earlyStoppingShare, cfg.Patience)
	card.Loss = "MSE against the rating min-max scaled from [1, 5] to [-1, 1]"
	card.TensorNames = inference.TensorNames()
	card.EmbeddingFormats = "csv: id,embedding; embedding is pgvector text [v1,...,v32]"
	cb, err := json.MarshalIndent(card, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode model card: %w", err)
	}
	files[artifacts.ModelCardKey] = append(cb, '\n')

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

// PublishedItemEmbeddings returns m's item embeddings as they are published (the
// item_embeddings.csv of a version): the item tower's embedding of each item, plus its
// popularity prior (PopularityPriors) in the item bias dimension. The prior changes a
// predicted rating by at most 2·PopularityWeight stars; it ranks items the model cannot tell
// apart (equal scores, as for every item when the data has no item effect) by popularity
// instead of arbitrarily.
func PublishedItemEmbeddings(m *inference.Model, items []Item) [][]float32 {
	f := make([]inference.ItemFeatures, len(items))
	for i, it := range items {
		f[i] = it.Features
	}
	embs := m.ItemEmbeddings(f)
	if m.Head != inference.HeadBias {
		return embs
	}
	for i, p := range PopularityPriors(items) {
		embs[i][inference.ItemBiasIndex] += p / inference.ItemBiasWeight
	}
	return embs
}

// PopularityWeight is the largest popularity prior (in score units, [-1, 1]).
const PopularityWeight = 0.005

// PopularityPriors returns each item's popularity prior: items ranked by ratings (most first,
// then by product code) get PopularityWeight·(n − rank)/n, n = len(items), so no two items
// share a prior.
func PopularityPriors(items []Item) []float32 {
	order := make([]int, len(items))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(items[b].Ratings, items[a].Ratings), cmp.Compare(items[a].ProductCode, items[b].ProductCode))
	})
	out := make([]float32, len(items))
	n := float64(len(items))
	for rank, i := range order {
		out[i] = float32(PopularityWeight * (n - float64(rank)) / n)
	}
	return out
}
