package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/recstream/recstream/batch"
	"github.com/recstream/recstream/internal/awsenv"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/pg"
)

func init() {
	register(command{name: "batch embeddings", summary: "load item and user embeddings into PostgreSQL + pgvector (atomic swap; --rollback)", run: runBatchEmbeddings})
}

func runBatchEmbeddings(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "batch embeddings")
	from := fs.String("from", "", "s3://bucket/prefix or file:///dir holding embeddings/{item,user}_embeddings.csv (default: the artifacts location, version --version)")
	version := fs.String("version", app.Config.Inference.ArtifactsVersion, "artifacts version to load when --from is not given: \"latest\" follows latest.json")
	force := fs.Bool("force", false, "load even when the files' checksums equal the live version's")
	rollback := fs.Bool("rollback", false, "swap the previous version back in instead of loading")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *rollback && (*from != "" || *force) {
		return usageError{"--rollback takes no --from or --force"}
	}
	if *from != "" {
		if u, err := url.Parse(*from); err != nil || (u.Scheme != "s3" && u.Scheme != "file") {
			return usageError{fmt.Sprintf("--from must be an s3://bucket/prefix or file:///dir URL, got %q", *from)}
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
	loader, err := batch.NewEmbeddingsLoader(pool, app.Config.Postgres, app.Log)
	if err != nil {
		return err
	}

	var res batch.LoadResult
	if *rollback {
		res, err = loader.Rollback(ctx)
	} else {
		var src batch.EmbeddingsSource
		src, err = embeddingsSource(ctx, app, *from, *version)
		if err != nil {
			return err
		}
		res, err = loader.Load(ctx, src, *force)
	}
	if errors.Is(err, batch.ErrLoadInProgress) {
		return exitCodeError{exitLocked, err}
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
	return nil
}

// embeddingsSource opens --from as one version's root, or the artifacts location at version.
func embeddingsSource(ctx context.Context, app *App, from, version string) (batch.EmbeddingsSource, error) {
	loc := from
	if loc == "" {
		loc = app.Config.S3.Buckets.Artifacts
	}
	var client *s3.Client
	if u, err := url.Parse(loc); err == nil && u.Scheme == "s3" {
		client, err = awsenv.S3(ctx, app.Config.S3)
		if err != nil {
			return batch.EmbeddingsSource{}, err
		}
	}
	store, err := objstore.Open(loc, client)
	if err != nil {
		return batch.EmbeddingsSource{}, err
	}
	if from != "" {
		return batch.EmbeddingsSource{Store: store}, nil
	}
	return batch.ResolveArtifactsVersion(ctx, store, version)
}
