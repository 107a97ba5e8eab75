package inference

import "time"

// The model card, model/model_card.json of a version (the file's key and the version rules are
// package internal/artifacts). `recstream train` writes it (package train); LoadModel reads it
// into Model.Metadata.

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

// Metrics describes a training run (package train computes them); they go into the model card
// (metrics).
type Metrics struct {
	// Rows is the number of ratings in the training data.
	Rows int `json:"rows"`
	// TrainRows of them trained the published model's content stage; the other
	// EarlyStoppingRows (the ratings of held-out customers) picked its epoch. The personal stage
	// trained on all Rows (see package train).
	TrainRows         int `json:"train_rows"`
	EarlyStoppingRows int `json:"early_stopping_rows"`
	// ContentEpoch is the content stage's kept epoch (0: the untrained model, which predicts
	// the mean rating) and ContentRMSE its RMSE in stars on the early-stopping ratings;
	// PersonalEpochs is how many epochs the personal stage ran and PersonalLoss its last
	// training loss (mean squared error on the scaled target in [-1, 1]).
	ContentEpoch   int     `json:"content_epoch"`
	ContentRMSE    float64 `json:"content_stop_rmse"`
	PersonalEpochs int     `json:"personal_epochs"`
	PersonalLoss   float64 `json:"personal_train_loss"`
	// Warm and Cold evaluate the training procedure on held-out data (see Evaluation).
	Warm Evaluation `json:"warm"`
	Cold Evaluation `json:"cold"`
	// MaxDurationSeconds is `recstream train --max-duration` (0: none). TimeLimited names the
	// stages it ended before their own stopping rule ("; "-separated), each of which kept its
	// best weights so far (empty: the run finished as configured). Only these two depend on
	// the clock.
	MaxDurationSeconds float64 `json:"max_duration_seconds,omitempty"`
	TimeLimited        string  `json:"time_limited,omitempty"`
}

// Evaluation scores one fit, trained like the published model but without the held-out part,
// on the held-out part. Warm: a seeded share of the ratings is held out (their customers have
// other ratings in training). Cold: a seeded share of the customers is held out with all their
// ratings (customers never seen in training). The held-out part is scored as the worker would
// score it: through the fit's encoders (fitted without it) and the model's embeddings. RMSEs
// are in stars; the model's prediction is clamp(2·(u·v) + 3, 1, 5) with the published item
// embeddings (train.PublishedItemEmbeddings); the baselines are fitted on the fit's ratings.
type Evaluation struct {
	Split     string `json:"split"` // "warm" or "cold"
	TrainRows int    `json:"train_rows"`
	TestRows  int    `json:"test_rows"`
	TestUsers int    `json:"test_users"`
	// ContentEpoch and PersonalEpochs describe the fit (see Metrics).
	ContentEpoch   int `json:"content_epoch"`
	PersonalEpochs int `json:"personal_epochs"`
	// ModelRMSE is the model's RMSE on the held-out ratings.
	ModelRMSE float64 `json:"model_rmse"`
	// GlobalMeanRMSE predicts the mean training rating for every pair.
	GlobalMeanRMSE float64 `json:"global_mean_rmse"`
	// ItemMeanRMSE predicts the item's mean training rating (the global mean for an item with
	// no training rating).
	ItemMeanRMSE float64 `json:"item_mean_rmse"`
	// UserMeanRMSE (warm only) predicts the user's mean training rating shrunk toward the
	// global mean: mean + Σ(r − mean) / (n + train.UserMeanShrinkage).
	UserMeanRMSE float64 `json:"user_mean_rmse,omitempty"`
	// NDCGUsers held-out users have at least two held-out ratings; for each, their held-out
	// items are ranked by the model's score and, as a baseline, by item popularity (number of
	// training ratings; ties by product code). NDCG@5 uses gain 2^rating − 1 and discount
	// log2(rank + 1), and is averaged over those users.
	NDCGUsers      int     `json:"ndcg_users"`
	ModelNDCG      float64 `json:"model_ndcg_at_5"`
	PopularityNDCG float64 `json:"popularity_ndcg_at_5"`
}
