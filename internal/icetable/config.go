// Package icetable writes the worker's output as an Apache Iceberg table: a catalog (the SQL
// catalog on PostgreSQL locally, an Iceberg REST catalog such as the Glue Data Catalog's or
// S3 Tables' on AWS), data files under names that are a pure function of the stream, and
// commits whose snapshot summaries carry each shard's last committed position, so a new owner
// of a shard knows exactly what the table already holds.
package icetable

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Config is the worker's `output.iceberg` section.
type Config struct {
	// Catalog: "sql" (PostgreSQL, the postgres section's database) or "rest".
	Catalog string `yaml:"catalog"`
	// Namespace and Name identify the table.
	Namespace string `yaml:"namespace"`
	Name      string `yaml:"name"`
	// Warehouse is where new tables are created (s3://bucket/prefix); "" puts it under the
	// recommendations location, at warehouse/.
	Warehouse string `yaml:"warehouse"`
	// CommitInterval: a worker commits the data files its shards flushed at most this often,
	// in one snapshot; the shards' checkpoints move after the commit lands.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// SQL is the SQL catalog's settings.
	SQL SQLConfig `yaml:"sql"`
	// REST is the REST catalog's settings.
	REST RESTConfig `yaml:"rest"`
}

// SQLConfig: the JDBC-layout catalog tables live in Schema of the postgres section's database.
type SQLConfig struct {
	Schema string `yaml:"schema"`
}

// RESTConfig is an Iceberg REST catalog. On AWS: the Glue Data Catalog's endpoint
// (https://glue.<region>.amazonaws.com/iceberg, warehouse = the account id, sigv4 with
// signing_name glue) or S3 Tables' (signing_name s3tables, warehouse = the table bucket ARN).
type RESTConfig struct {
	URI         string `yaml:"uri"`
	Warehouse   string `yaml:"warehouse"`
	SigV4       bool   `yaml:"sigv4"`
	SigningName string `yaml:"signing_name"`
	Region      string `yaml:"region"`
}

// DefaultConfig matches config.yaml.
func DefaultConfig() Config {
	return Config{Catalog: "sql", Namespace: "recstream", Name: "recommendations", CommitInterval: 5 * time.Second,
		SQL: SQLConfig{Schema: "iceberg_catalog"}}
}

var identRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Validate reports the first invalid key, relative to the iceberg section.
func (c Config) Validate() error {
	switch c.Catalog {
	case "sql":
		if !identRe.MatchString(c.SQL.Schema) {
			return fmt.Errorf("sql.schema: must be a lower-case SQL identifier, got %q", c.SQL.Schema)
		}
	case "rest":
		if !strings.HasPrefix(c.REST.URI, "https://") && !strings.HasPrefix(c.REST.URI, "http://") {
			return fmt.Errorf("rest.uri: must be an http(s) URL, got %q", c.REST.URI)
		}
		if c.REST.SigV4 && c.REST.SigningName == "" {
			return fmt.Errorf("rest.signing_name: required with rest.sigv4 (glue or s3tables)")
		}
	default:
		return fmt.Errorf("catalog: must be sql or rest, got %q", c.Catalog)
	}
	if !identRe.MatchString(c.Namespace) {
		return fmt.Errorf("namespace: must be a lower-case identifier, got %q", c.Namespace)
	}
	if !identRe.MatchString(c.Name) {
		return fmt.Errorf("name: must be a lower-case identifier, got %q", c.Name)
	}
	if c.Warehouse != "" && !strings.HasPrefix(c.Warehouse, "s3://") && !strings.HasPrefix(c.Warehouse, "file://") {
		return fmt.Errorf("warehouse: must be s3://bucket[/prefix] or empty, got %q", c.Warehouse)
	}
	if c.CommitInterval < 100*time.Millisecond || c.CommitInterval > 10*time.Second {
		// Above 10 s a commit stops being "seconds fresh"; below 100 ms the catalog's CAS
		// becomes the bottleneck for a fleet.
		return fmt.Errorf("commit_interval: must be between 100ms and 10s, got %s", c.CommitInterval)
	}
	return nil
}
