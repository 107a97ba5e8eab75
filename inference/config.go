// Package inference is the two-tower recommender: feature encoders and towers (pure float32
// math, no I/O), training, artifact save/load, and the pgvector queries that find items near a
// user and near an item.
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

// TrainConfig holds training hyper-parameters.
type TrainConfig struct {
	Epochs          int     `yaml:"epochs"`
	BatchSize       int     `yaml:"batch_size"`
	LearningRate    float64 `yaml:"learning_rate"`
	ValidationShare float64 `yaml:"validation_share"`
	Seed            int64   `yaml:"seed"`
}

// DefaultConfig matches config.yaml.
func DefaultConfig() Config {
	return Config{K: 5, ArtifactsVersion: "latest", ReloadInterval: time.Minute,
		Train: TrainConfig{Epochs: 30, BatchSize: 64, LearningRate: 0.001, ValidationShare: 0.2, Seed: 42}}
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
	if c.BatchSize < 1 {
		return fmt.Errorf("batch_size: must be >= 1, got %d", c.BatchSize)
	}
	if !(c.LearningRate > 0 && c.LearningRate < 1) {
		return fmt.Errorf("learning_rate: must be in (0, 1), got %g", c.LearningRate)
	}
	if !(c.ValidationShare > 0 && c.ValidationShare < 1) {
		return fmt.Errorf("validation_share: must be in (0, 1), got %g", c.ValidationShare)
	}
	return nil
}
