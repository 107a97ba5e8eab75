package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/internal/artifacts"
	"github.com/recstream/recstream/internal/objstore"
)

// coldSlack is how far above the global mean the cold RMSE may be before train warns: about
// the seed-to-seed spread of that difference on the real data.
const coldSlack = 0.01

func runTrain(ctx context.Context, app *App, args []string) error {
	cfg := app.Config.Inference.Train
	fs := newFlagSet(app, "train")
	from := fs.String("from", app.Config.S3.Buckets.Datalake, "datalake location holding the ETL's manifest (s3://bucket[/prefix] or file:///dir)")
	csvPath := fs.String("csv", "", "read the lab's ratings_ml_training_dataset.csv instead of the ETL's dataset")
	products := fs.String("products", "", "also embed the products of this classicmodels products.csv that have no rating")
	to := fs.String("to", app.Config.S3.Buckets.Artifacts, "artifacts location to publish to (s3://bucket[/prefix] or file:///dir)")
	publish := fs.Bool("publish", true, "publish the artifacts (false: train and report only)")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "random seed (split, initial weights, batch order)")
	fs.IntVar(&cfg.Epochs, "epochs", cfg.Epochs, "most epochs of each training stage (early stopping ends them sooner)")
	maxDuration := fs.Duration("max-duration", 0, "bound the training (not the reading) to this long: a stage that runs out of its share ends with its best weights so far, and the log and the model card (metrics.time_limited) say so; 0 = no bound")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err.Error()}
	}
	if *maxDuration < 0 {
		return usageError{fmt.Sprintf("--max-duration: must be >= 0, got %s", *maxDuration)}
	}

	// A log line at least every trainProgressInterval, from the first read on.
	prog := newTrainProgress(app.Log, time.Now)
	progCtx, stopProg := context.WithCancel(ctx)
	ticker := time.NewTicker(trainProgressInterval)
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		prog.run(progCtx, ticker.C)
	}()
	defer func() {
		ticker.Stop()
		stopProg()
		<-progDone
	}()

	var ratings *train.Ratings
	var source string
	var err error
	if *csvPath != "" {
		ratings, err = readTrainingCSV(*csvPath)
		source = *csvPath
	} else {
		ratings, source, err = readTrainingDataset(ctx, app, *from, prog.read)
	}
	if err != nil {
		return err
	}
	app.Log.Info("training started", zap.String("component", "train"), zap.Int("records", ratings.Len()), zap.Int("customers", len(ratings.Users)),
		zap.Int("products", len(ratings.Items)), zap.Int("epochs", cfg.Epochs), zap.Int64("seed", cfg.Seed), zap.Duration("max_duration", *maxDuration))

	// Three fits (warm and cold evaluation, then the published model) of two stages each.
	bar := progressBar(app, 6, "training", "stages")
	start := time.Now()
	res, err := train.TrainRatings(ctx, ratings, cfg, train.Options{MaxDuration: *maxDuration, Progress: func(p train.Progress) {
		prog.update(p)
		app.Log.Debug("epoch done", zap.String("component", "train"), zap.String("phase", p.Phase), zap.String("stage", p.Stage), zap.Int("epoch", p.Epoch),
			zap.Float64("train_loss", p.TrainLoss), zap.Float64("stop_rmse", p.StopRMSE), zap.Duration("duration", p.Duration))
		if p.Done && bar != nil {
			_ = bar.Add(1)
		}
	}})
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	took := time.Since(start)
	m := res.Metrics
	if m.TimeLimited != "" {
		app.Log.Warn("training stopped by --max-duration: the stages named kept their best weights so far (model card: metrics.time_limited)",
			zap.String("component", "train"), zap.Duration("max_duration", *maxDuration), zap.String("time_limited", m.TimeLimited))
	}
	fmt.Fprintf(app.Stdout, "evaluation (RMSE in stars, lower is better; NDCG@5 of each held-out customer's held-out items, higher is better):\n")
	if err := train.WriteTable(app.Stdout, m); err != nil {
		return err
	}
	fmt.Fprintf(app.Stdout, "model on all data: %d ratings, %d customers, %d products; content stage epoch %d, personal stage %d epochs; trained in %s\n",
		m.Rows, len(res.Users), len(res.Items), m.ContentEpoch, m.PersonalEpochs, took.Round(time.Millisecond))
	app.Log.Info("model evaluated", zap.String("component", "train"),
		zap.Float64("warm_rmse", m.Warm.ModelRMSE), zap.Float64("warm_global_mean_rmse", m.Warm.GlobalMeanRMSE), zap.Float64("warm_item_mean_rmse", m.Warm.ItemMeanRMSE),
		zap.Float64("warm_user_mean_rmse", m.Warm.UserMeanRMSE), zap.Float64("cold_rmse", m.Cold.ModelRMSE), zap.Float64("cold_global_mean_rmse", m.Cold.GlobalMeanRMSE),
		zap.Float64("cold_item_mean_rmse", m.Cold.ItemMeanRMSE), zap.Float64("warm_ndcg5", m.Warm.ModelNDCG), zap.Float64("warm_popularity_ndcg5", m.Warm.PopularityNDCG),
		zap.Float64("cold_ndcg5", m.Cold.ModelNDCG), zap.Float64("cold_popularity_ndcg5", m.Cold.PopularityNDCG), zap.Duration("duration", took))
	if m.Warm.ModelRMSE >= m.Warm.GlobalMeanRMSE || m.Warm.ModelRMSE >= m.Warm.ItemMeanRMSE || m.Cold.ModelRMSE > m.Cold.GlobalMeanRMSE+coldSlack {
		app.Log.Warn("model does not beat the baselines", zap.String("component", "train"),
			zap.Float64("warm_rmse", m.Warm.ModelRMSE), zap.Float64("warm_global_mean_rmse", m.Warm.GlobalMeanRMSE), zap.Float64("warm_item_mean_rmse", m.Warm.ItemMeanRMSE),
			zap.Float64("cold_rmse", m.Cold.ModelRMSE), zap.Float64("cold_global_mean_rmse", m.Cold.GlobalMeanRMSE))
	}
	if *products != "" {
		items, err := readProductsCSV(*products)
		if err != nil {
			return err
		}
		n := res.AddItems(items)
		app.Log.Info("products without ratings added", zap.String("component", "train"), zap.Int("records", n))
	}
	if !*publish {
		return nil
	}
	store, err := openStore(ctx, app, "--to", *to)
	if err != nil {
		return err
	}
	version, err := train.Publish(ctx, store, res, cfg, inference.ModelCard{Created: time.Now().UTC(), TrainSeconds: took.Seconds(), Source: source})
	if err != nil {
		return err
	}
	app.Log.Info("artifacts published", zap.String("component", "train"), zap.String("version", version),
		zap.String("s3_key", store.URL(artifacts.VersionPrefix(version))))
	fmt.Fprintf(app.Stdout, "published artifacts version %s at %s (latest.json updated)\n", version, store.URL(artifacts.VersionPrefix(version)))
	return nil
}

func readTrainingCSV(path string) (*train.Ratings, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usageError{fmt.Sprintf("--csv: %v", err)}
	}
	defer f.Close()
	ex, err := train.ReadLabCSV(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r, err := train.NewRatings(ex)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func readProductsCSV(path string) ([]train.Item, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usageError{fmt.Sprintf("--products: %v", err)}
	}
	defer f.Close()
	items, err := train.ReadProductsCSV(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return items, nil
}

// readTrainingDataset reads the ETL's published dataset through its manifest into compact
// Ratings, calling read with the number of ratings read so far every readReport ratings. An
// etl run that publishes meanwhile deletes the files of the previous manifest once its own is
// written; when a file is missing and the manifest has changed, the read starts over with the
// new one.
func readTrainingDataset(ctx context.Context, app *App, loc string, read func(n int)) (*train.Ratings, string, error) {
	store, err := openStore(ctx, app, "datalake", loc)
	if err != nil {
		return nil, "", err
	}
	for attempt := 1; ; attempt++ {
		m, err := dataset.ReadManifest(ctx, store)
		if errors.Is(err, dataset.ErrNoDataset) {
			return nil, "", exitCodeError{exitFailure, err}
		}
		if err != nil {
			return nil, "", err
		}
		app.Log.Info("reading dataset", zap.String("component", "train"), zap.String("stage", "read"), zap.Int64("rows", m.Rows), zap.String("run_id", m.RunID))
		b := train.NewRatingsBuilder(int(min(m.Rows, 1<<31-1)))
		err = dataset.ReadTrainingRows(ctx, store, m, func(r dataset.TrainingRow) error {
			if err := b.Add(train.ExampleFromRow(r)); err != nil {
				return err
			}
			if n := b.Len(); n%readReport == 0 {
				read(n)
			}
			return nil
		})
		if err == nil {
			read(b.Len())
			r, err := b.Finish()
			if err != nil {
				return nil, "", err
			}
			return r, store.URL(dataset.ManifestKey) + " run " + m.RunID, nil
		}
		if errors.Is(err, objstore.ErrNotExist) && attempt < 3 {
			if now, merr := dataset.ReadManifest(ctx, store); merr == nil && (now.RunID != m.RunID || !now.FinishedAt.Equal(m.FinishedAt)) {
				app.Log.Info("dataset republished while reading: reading the new one", zap.String("component", "train"), zap.String("run_id", now.RunID))
				continue
			}
		}
		return nil, "", err
	}
}

// readReport is how often (in ratings) reading reports its count to the progress log.
const readReport = 10000
