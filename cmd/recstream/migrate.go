package main

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/pg"
	schema "github.com/recstream/recstream/sql"
)

func runMigrate(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "migrate")
	if err := fs.parse(args); err != nil {
		return err
	}
	_, err := migratePostgres(ctx, app)
	return err
}

// migratePostgres applies pending migrations to postgres.schema on a connection of its own (the
// pool's connections need the vector type, which the first migration may create). Jobs that
// need the schema call it before pg.Connect.
func migratePostgres(ctx context.Context, app *App) ([]int, error) {
	conn, err := pg.ConnectRaw(ctx, app.Config.Postgres)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	applied, err := schema.MigratePostgres(ctx, conn, app.Config.Postgres.Schema)
	if err != nil {
		return applied, err
	}
	app.Log.Info("schema migrated", zap.String("component", "migrate"), zap.String("schema", app.Config.Postgres.Schema), zap.Ints("applied", applied))
	return applied, nil
}
