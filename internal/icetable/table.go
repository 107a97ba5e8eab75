package icetable

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/catalog/rest"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	"github.com/apache/iceberg-go/table"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Schema is the table's schema: the worker's Parquet schema (worker.OutputRecord), field for
// field, with arrival_time as timestamptz (microseconds, as Iceberg requires). Field ids are
// fixed here, and data files carry no ids of their own: readers map them by name through the
// table's schema.name-mapping.default, which AddFiles sets.
func Schema() *iceberg.Schema {
	str, i64, f64, boolean := iceberg.PrimitiveTypes.String, iceberg.PrimitiveTypes.Int64, iceberg.PrimitiveTypes.Float64, iceberg.PrimitiveTypes.Bool
	f := func(id int, name string, t iceberg.Type) iceberg.NestedField {
		return iceberg.NestedField{ID: id, Name: name, Type: t, Required: true}
	}
	list := func(elemID int, elem iceberg.Type) *iceberg.ListType {
		return &iceberg.ListType{ElementID: elemID, Element: elem, ElementRequired: true}
	}
	return iceberg.NewSchema(0,
		f(1, "session_id", str),
		f(2, "customer_number", i64),
		f(3, "city", str),
		f(4, "country", str),
		f(5, "credit_limit", f64),
		f(6, "browse_history", list(14, &iceberg.StructType{FieldList: []iceberg.NestedField{
			f(15, "product_code", str), f(16, "quantity", i64), f(17, "in_shopping_cart", boolean)}})),
		f(7, "recommended_items", list(18, &iceberg.StructType{FieldList: []iceberg.NestedField{
			f(19, "id", str), f(20, "score", f64)}})),
		f(8, "similar_items", &iceberg.StructType{FieldList: []iceberg.NestedField{
			f(21, "product_code", str),
			f(22, "similar_items", list(23, &iceberg.StructType{FieldList: []iceberg.NestedField{
				f(24, "id", str), f(25, "distance", f64)}}))}}),
		f(9, "shard_id", str),
		f(10, "sequence_number", str),
		f(11, "sub_sequence_number", i64),
		f(12, "arrival_time", iceberg.PrimitiveTypes.TimestampTz),
		f(13, "model_version", str),
	)
}

// arrivalFieldID is arrival_time's id in Schema, the partition source.
const arrivalFieldID = 12

// PartitionSpec partitions by hour(arrival_time), the Hive layout's year/month/day/hour.
func PartitionSpec() iceberg.PartitionSpec {
	return iceberg.NewPartitionSpec(iceberg.PartitionField{SourceIDs: []int{arrivalFieldID}, FieldID: 1000,
		Name: "arrival_time_hour", Transform: iceberg.HourTransform{}})
}

// tableProperties: format v2; manifests merged on append, so a commit every few seconds does
// not grow the manifest list without bound; old metadata.json files deleted after commit.
func tableProperties() iceberg.Properties {
	return iceberg.Properties{
		table.PropertyFormatVersion:               "2",
		table.ManifestMergeEnabledKey:             "true",
		table.MetadataDeleteAfterCommitEnabledKey: "true",
		table.MetadataPreviousVersionsMaxKey:      "20",
		"write.parquet.compression-codec":         "snappy",
		"recstream.writer":                        "recstream worker",
	}
}

// Catalog opens the configured catalog. pgDSN and pgPassword are the postgres section's (the
// SQL catalog's tables live in cfg.SQL.Schema of that database).
func Catalog(ctx context.Context, cfg Config, pgDSN, pgPassword, warehouse string) (catalog.Catalog, func() error, error) {
	switch cfg.Catalog {
	case "sql":
		cc, err := pgx.ParseConfig(pgDSN)
		if err != nil {
			return nil, nil, fmt.Errorf("iceberg sql catalog: postgres dsn: %w", err)
		}
		if pgPassword != "" {
			cc.Password = pgPassword
		}
		db := stdlib.OpenDB(*cc)
		db.SetMaxOpenConns(4)
		if _, err := db.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+cfg.SQL.Schema); err != nil {
			db.Close()
			return nil, nil, fmt.Errorf("iceberg sql catalog: create schema %s: %w", cfg.SQL.Schema, err)
		}
		db.Close()
		// The catalog's own connections find its tables through search_path.
		cc.RuntimeParams["search_path"] = cfg.SQL.Schema
		db = stdlib.OpenDB(*cc)
		db.SetMaxOpenConns(4)
		cat, err := sqlcat.NewCatalog("recstream", db, sqlcat.Postgres, iceberg.Properties{
			"warehouse": warehouse, "init_catalog_tables": "true", sqlcat.SchemaVersionKey: sqlcat.SchemaVersionV1})
		if err != nil {
			db.Close()
			return nil, nil, fmt.Errorf("iceberg sql catalog: %w", err)
		}
		return cat, db.Close, nil
	case "rest":
		opts := []rest.Option{}
		if cfg.REST.Warehouse != "" {
			opts = append(opts, rest.WithWarehouseLocation(cfg.REST.Warehouse))
		}
		if cfg.REST.SigV4 {
			opts = append(opts, rest.WithSigV4RegionSvc(cfg.REST.Region, cfg.REST.SigningName))
		}
		cat, err := rest.NewCatalog(ctx, "recstream", cfg.REST.URI, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("iceberg rest catalog %s: %w", cfg.REST.URI, err)
		}
		return cat, func() error { return nil }, nil
	}
	return nil, nil, fmt.Errorf("iceberg: unknown catalog %q", cfg.Catalog)
}

// Ident is the table's identifier.
func (c Config) Ident() table.Identifier { return table.Identifier{c.Namespace, c.Name} }

// Ensure loads the table, creating its namespace and the table (at warehouse/<namespace>/<name>)
// when missing. Two workers starting together may both try: the loser of the create loads
// the winner's table.
func Ensure(ctx context.Context, cat catalog.Catalog, cfg Config, warehouse string) (*table.Table, error) {
	ident := cfg.Ident()
	tbl, err := cat.LoadTable(ctx, ident)
	if err == nil {
		return tbl, nil
	}
	if !errors.Is(err, catalog.ErrNoSuchTable) && !errors.Is(err, catalog.ErrNoSuchNamespace) {
		return nil, fmt.Errorf("load iceberg table %s: %w", strings.Join(ident, "."), err)
	}
	if err := cat.CreateNamespace(ctx, table.Identifier{cfg.Namespace}, nil); err != nil && !errors.Is(err, catalog.ErrNamespaceAlreadyExists) {
		return nil, fmt.Errorf("create iceberg namespace %s: %w", cfg.Namespace, err)
	}
	spec := PartitionSpec()
	opts := []catalog.CreateTableOpt{catalog.WithPartitionSpec(&spec), catalog.WithProperties(tableProperties())}
	if warehouse != "" {
		opts = append(opts, catalog.WithLocation(strings.TrimSuffix(warehouse, "/")+"/"+cfg.Namespace+"/"+cfg.Name))
	}
	tbl, err = cat.CreateTable(ctx, ident, Schema(), opts...)
	if err == nil {
		return tbl, nil
	}
	if errors.Is(err, catalog.ErrTableAlreadyExists) {
		return cat.LoadTable(ctx, ident)
	}
	return nil, fmt.Errorf("create iceberg table %s: %w", strings.Join(ident, "."), err)
}

var _ = sql.ErrNoRows
