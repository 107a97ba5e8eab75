package batch

import (
	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/batch/seed"
)

// Forwarding names for code that still imports the batch package for the training dataset or
// the generator: the training command and its tests are being moved by another change at the
// same time, so they keep compiling until they import batch/dataset and batch/seed
// themselves, and then this file goes. New code imports those packages.
//
// Deprecated: use the names of package dataset.
type TrainingRow = dataset.TrainingRow

// Deprecated: use dataset.ManifestKey.
const ManifestKey = dataset.ManifestKey

// Deprecated: use dataset.ErrNoDataset.
var ErrNoDataset = dataset.ErrNoDataset

// Deprecated: use dataset.ReadManifest.
var ReadManifest = dataset.ReadManifest

// Deprecated: use dataset.ReadTrainingRows.
var ReadTrainingRows = dataset.ReadTrainingRows

// Deprecated: use seed.NewGenerator.
var NewGenerator = seed.NewGenerator
