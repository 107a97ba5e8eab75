package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"

	"go.uber.org/zap"

	"github.com/recstream/recstream/batch/embeddings"
	"github.com/recstream/recstream/internal/pg"
)

// errFromNeedsWithoutModel explains why `--from DIR` alone is refused.
const errFromNeedsWithoutModel = "--from loads bare embeddings CSVs as a version named after their checksums (sha-<12 hex>), " +
	"and no model is ever published under such a name: a worker serving a version without its model cannot answer " +
	"(every batch fails and its readiness check stays red until a version with a model is live). " +
	"Load a trained version from the artifacts location instead (--version latest or --version <version>), " +
	"or pass --without-model to load these files anyway (for pgvector tests and benchmarks with no worker)"

func runBatchEmbeddings(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "batch embeddings")
	from := fs.String("from", "", "s3://bucket/prefix or file:///dir holding embeddings/{item,user}_embeddings.csv, loaded as version sha-<checksums> with no model: needs --without-model (default: the artifacts location, version --version)")
	version := fs.String("version", app.Config.Inference.ArtifactsVersion, "artifacts version to load when --from is not given: \"latest\" follows latest.json")
	force := fs.Bool("force", false, "load even when the files' checksums equal the live version's")
	rollback := fs.Bool("rollback", false, "swap the previous version back in instead of loading")
	withoutModel := fs.Bool("without-model", false, "load even though the version has no model in the artifacts location (workers cannot serve it: for pgvector tests and benchmarks)")
	if err := fs.parse(args); err != nil {
		return err
	}
	versionSet := false
	fs.Visit(func(f *flag.Flag) { versionSet = versionSet || f.Name == "version" })
	if *rollback && (*from != "" || *force || *withoutModel || versionSet) {
		return usageError{"--rollback takes no --from, --version, --force or --without-model"}
	}
	if *from != "" {
		if u, err := url.Parse(*from); err != nil || (u.Scheme != "s3" && u.Scheme != "file") {
			return usageError{fmt.Sprintf("--from must be an s3://bucket/prefix or file:///dir URL, got %q", *from)}
		}
		if versionSet {
			return usageError{"--from takes no --version: the files are loaded as a version named after their checksums (sha-<12 hex>); --version names a version of the artifacts location"}
		}
		if !*withoutModel {
			return usageError{errFromNeedsWithoutModel}
		}
	}

	if _, err := migratePostgres(ctx, app); err != nil {
		return err
	}
	pool, err := pg.Connect(ctx, app.Config.Postgres)
	if err != nil {
		return err
	}
	defer pool.Close()
	loader, err := embeddings.NewLoader(pool, app.Config.Postgres, app.Log)
	if err != nil {
		return err
	}

	var res embeddings.LoadResult
	if *rollback {
		res, err = loader.Rollback(ctx)
	} else {
		var src embeddings.Source
		src, err = embeddingsSource(ctx, app, *from, *version, *withoutModel)
		if err != nil {
			return err
		}
		res, err = loader.Load(ctx, src, *force)
	}
	if errors.Is(err, embeddings.ErrLoadInProgress) {
		return exitCodeError{exitLocked, err}
	}
	if errors.Is(err, embeddings.ErrNoModel) || errors.Is(err, embeddings.ErrNotOfModel) {
		// No retry fixes this: load another version, publish the model, or say --without-model.
		return exitCodeError{exitUsage, fmt.Errorf("%w; nothing was swapped in (--without-model loads it anyway, for embeddings no worker serves)", err)}
	}
	if err != nil {
		return err
	}
	switch {
	case *rollback:
		fmt.Fprintf(app.Stdout, "rolled back: live embeddings version is %s (dimension %d, %d items, %d users)\n", res.Version, res.Dimension, res.ItemRows, res.UserRows)
	case res.NoOp:
		fmt.Fprintf(app.Stdout, "unchanged: embeddings version %s is already live (use --force to reload)\n", res.Version)
	default:
		fmt.Fprintf(app.Stdout, "loaded embeddings version %s: dimension %d, %d items, %d users (copy %s, index %s, swap %s)\n",
			res.Version, res.Dimension, res.ItemRows, res.UserRows, res.Copy.Round(1e6), res.Index.Round(1e6), res.Swap.Round(1e6))
	}
	if *withoutModel && !*rollback {
		app.Log.Warn("embeddings loaded without a model check: a worker cannot serve this version until its model is published",
			zap.String("component", "embeddings"), zap.String("version", res.Version))
		fmt.Fprintf(app.Stdout, "warning: version %s was loaded without a model check; workers answer only once versions/%s/ holds its model\n", res.Version, res.Version)
	}
	return nil
}

// embeddingsSource opens --from as one version's root, or the artifacts location at version;
// the model is checked in the artifacts location unless withoutModel.
func embeddingsSource(ctx context.Context, app *App, from, version string, withoutModel bool) (embeddings.Source, error) {
	if from != "" {
		store, err := openStore(ctx, app, "--from", from)
		if err != nil {
			return embeddings.Source{}, err
		}
		src := embeddings.Source{Store: store, WithoutModel: withoutModel}
		if !withoutModel {
			if src.Models, err = openStore(ctx, app, "s3.buckets.artifacts", app.Config.S3.Buckets.Artifacts); err != nil {
				return embeddings.Source{}, err
			}
		}
		return src, nil
	}
	arts, err := openStore(ctx, app, "s3.buckets.artifacts", app.Config.S3.Buckets.Artifacts)
	if err != nil {
		return embeddings.Source{}, err
	}
	src, err := embeddings.ResolveArtifactsVersion(ctx, arts, version)
	src.WithoutModel = withoutModel
	return src, err
}
