package inference

import (
	"math"
	"strings"
	"testing"
)

func TestTrainConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		edit func(*TrainConfig)
		want string
	}{
		{func(c *TrainConfig) { c.Patience = 0 }, "patience: must be >= 1"},
		{func(c *TrainConfig) { c.BiasPenalty = -1 }, "bias_penalty"},
		{func(c *TrainConfig) { c.EmbeddingPenalty = math.NaN() }, "embedding_penalty"},
		{func(c *TrainConfig) { c.WeightDecay = 1 }, "weight_decay"},
	} {
		cfg := DefaultConfig().Train
		tc.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
}
