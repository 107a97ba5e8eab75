// Package inference serves the two-tower recommender: feature encoders and towers (pure float32
// math, no I/O), the model card and weights formats, the model loader, the Service the stream
// worker asks, and the pgvector queries that find items near a user and near an item.
//
// Training, evaluation, publishing and the training data's CSV readers are package
// inference/train, a batch job's code: it imports this package for the model, and nothing on
// the serving path imports it.
package inference

import (
	"fmt"
	"time"
)

// Config is the `inference` config section.
type Config struct {
	// K is the number of recommended and similar items per event.
	K int `yaml:"k"`
	// ArtifactsVersion is the artifacts version to serve: "latest" follows the latest pointer.
	ArtifactsVersion string `yaml:"artifacts_version"`
	// ReloadInterval is how often a running process checks for a new version (0: never).
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// Train holds `recstream train` hyper-parameters.
	Train TrainConfig `yaml:"train"`
}

// TrainConfig holds training hyper-parameters (`inference.train`), used by package train. They
// are part of the config file's inference section and recorded in the model card, so the type
// lives here.
type TrainConfig struct {
	// Epochs is the most passes over a fit's training ratings; the best epoch's weights are kept.
	Epochs int `yaml:"epochs" json:"epochs"`
	// Patience stops a fit after this many epochs without a lower early-stopping RMSE.
	Patience int `yaml:"patience" json:"patience"`
	// BatchSize is the content stage's mini-batch size for Adam, in ratings: an epoch is a pass
	// over the training ratings in batches of that size. Each step passes every customer and
	// product of its batch through its tower, so small batches of random ratings of a large
	// shop pay for most customers at every step. 0 is auto: full batch (each epoch one step,
	// O(customers + products + ratings)) up to 1,000,000 training ratings; above that, each
	// epoch is one step on a batch of whole customers holding about 1,000,000 ratings (the
	// customers taken in a shuffled order, a new one each pass), so that a larger shop's epoch
	// costs what a 1 M shop's does and the number of epochs does not grow with the shop (an
	// epoch then sees part of the ratings; epochs and patience count steps). The personal
	// stage is always full-batch.
	BatchSize int `yaml:"batch_size" json:"batch_size"`
	// LearningRate is Adam's step size.
	LearningRate float64 `yaml:"learning_rate" json:"learning_rate"`
	// ValidationShare is the share held out for the evaluation: of the ratings (warm split) and
	// of the customers (cold split).
	ValidationShare float64 `yaml:"validation_share" json:"validation_share"`
	// Seed drives the split, the initial weights and the batch order.
	Seed int64 `yaml:"seed" json:"seed"`
	// BiasPenalty is λ of the L2 penalty on the user bias (toward the mean rating) and the item
	// bias, once per user and per item and epoch: a user bias is its ratings' mean shrunk like
	// the shrunk per-user mean with k = λ.
	BiasPenalty float64 `yaml:"bias_penalty" json:"bias_penalty"`
	// EmbeddingPenalty is λ of the L2 penalty on the interaction parts of the embeddings, once
	// per user and per item and epoch.
	EmbeddingPenalty float64 `yaml:"embedding_penalty" json:"embedding_penalty"`
	// WeightDecay is the decoupled weight decay (torch.optim.AdamW's weight_decay): each step
	// every weight also shrinks by learning_rate × weight_decay of itself.
	WeightDecay float64 `yaml:"weight_decay" json:"weight_decay"`
}

// DefaultConfig matches config.yaml.
func DefaultConfig() Config {
	return Config{K: 5, ArtifactsVersion: "latest", ReloadInterval: time.Minute,
		Train: TrainConfig{Epochs: 400, Patience: 30, BatchSize: 0, LearningRate: 0.003, ValidationShare: 0.2, Seed: 42,
			BiasPenalty: 5, EmbeddingPenalty: 1, WeightDecay: 0.0001}}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.K < 1 || c.K > 1000 {
		return fmt.Errorf("k: must be between 1 and 1000, got %d", c.K)
	}
	if c.ArtifactsVersion == "" {
		return fmt.Errorf("artifacts_version: must be \"latest\" or a version name, got %q", c.ArtifactsVersion)
	}
	if c.ReloadInterval < 0 {
		return fmt.Errorf("reload_interval: must be >= 0, got %s", c.ReloadInterval)
	}
	return nil
}

// Validate reports the first invalid field.
func (c TrainConfig) Validate() error {
	if c.Epochs < 1 {
		return fmt.Errorf("epochs: must be >= 1, got %d", c.Epochs)
	}
	if c.Patience < 1 {
		return fmt.Errorf("patience: must be >= 1, got %d", c.Patience)
	}
	if c.BatchSize < 0 {
		return fmt.Errorf("batch_size: must be >= 0 (0: auto), got %d", c.BatchSize)
	}
	if !(c.LearningRate > 0 && c.LearningRate < 1) {
		return fmt.Errorf("learning_rate: must be in (0, 1), got %g", c.LearningRate)
	}
	if !(c.ValidationShare > 0 && c.ValidationShare < 1) {
		return fmt.Errorf("validation_share: must be in (0, 1), got %g", c.ValidationShare)
	}
	if !(c.BiasPenalty >= 0 && c.BiasPenalty <= 1e6) {
		return fmt.Errorf("bias_penalty: must be in [0, 1e6], got %g", c.BiasPenalty)
	}
	if !(c.EmbeddingPenalty >= 0 && c.EmbeddingPenalty <= 1e6) {
		return fmt.Errorf("embedding_penalty: must be in [0, 1e6], got %g", c.EmbeddingPenalty)
	}
	if !(c.WeightDecay >= 0 && c.WeightDecay < 1) {
		return fmt.Errorf("weight_decay: must be in [0, 1), got %g", c.WeightDecay)
	}
	return nil
}
