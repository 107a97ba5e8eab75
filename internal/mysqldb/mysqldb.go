// Package mysqldb opens the classicmodels source database (MySQL; MariaDB on the local stack)
// that `batch seed` writes, `batch etl` reads and `produce` and `inspect` look products up in,
// and holds the text form of its money type, DECIMAL(10,2).
package mysqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Config is the `mysql` config section (the classicmodels source database).
type Config struct {
	// DSN in go-sql-driver form without the password: user@tcp(host:3306)/classicmodels.
	DSN string `yaml:"dsn"`
	// Password comes only from RECSTREAM_MYSQL_PASSWORD.
	Password     string `yaml:"password" secret:"true"`
	MaxOpenConns int    `yaml:"max_open_conns"`
}

// DefaultConfig matches the local stack.
func DefaultConfig() Config {
	return Config{DSN: "recstream@tcp(127.0.0.1:3306)/classicmodels", MaxOpenConns: 4}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.DSN == "" {
		return errors.New("dsn: must not be empty")
	}
	if _, err := mysql.ParseDSN(c.DSN); err != nil {
		return errors.New("dsn: cannot parse (value not shown: it may hold credentials)")
	}
	if c.MaxOpenConns < 1 {
		return fmt.Errorf("max_open_conns: must be >= 1, got %d", c.MaxOpenConns)
	}
	return nil
}

// Open returns a pool for the source database of c, with password set from the caller
// (cmd reads RECSTREAM_MYSQL_PASSWORD into c.Password). It validates c and does no I/O: the
// first query connects. Parameters are interpolated client-side (one round trip per statement,
// which multi-row INSERT batches need); the driver's default handshake collation is utf8mb4. The caller
// closes the pool.
func Open(c Config) (*sql.DB, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("mysql config: %w", err)
	}
	dc, err := driverConfig(c)
	if err != nil {
		return nil, err
	}
	conn, err := mysql.NewConnector(dc)
	if err != nil {
		return nil, errors.New("mysql: cannot build connector (DSN not shown: it may hold credentials)")
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(c.MaxOpenConns)
	db.SetMaxIdleConns(c.MaxOpenConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, nil
}

// Database returns the database name of c's DSN ("" when the DSN names none).
func Database(c Config) (string, error) {
	dc, err := mysql.ParseDSN(c.DSN)
	if err != nil {
		return "", errors.New("mysql dsn: cannot parse (value not shown: it may hold credentials)")
	}
	return dc.DBName, nil
}

// WithDatabase returns c with the DSN's database replaced by db.
func (c Config) WithDatabase(db string) (Config, error) {
	dc, err := mysql.ParseDSN(c.DSN)
	if err != nil {
		return c, errors.New("mysql dsn: cannot parse (value not shown: it may hold credentials)")
	}
	dc.DBName = db
	c.DSN = dc.FormatDSN()
	return c, nil
}

// EnsureDatabase creates the DSN's database when it does not exist yet, connecting without a
// default database. Seeding calls it so a fresh server needs no manual step.
func EnsureDatabase(ctx context.Context, c Config) error {
	name, err := Database(c)
	if err != nil {
		return err
	}
	if name == "" {
		return errors.New("mysql dsn: names no database")
	}
	noDB, err := c.WithDatabase("")
	if err != nil {
		return err
	}
	db, err := Open(noDB)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+QuoteIdent(name)+" CHARACTER SET utf8mb4"); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

func driverConfig(c Config) (*mysql.Config, error) {
	dc, err := mysql.ParseDSN(c.DSN)
	if err != nil {
		return nil, errors.New("mysql dsn: cannot parse (value not shown: it may hold credentials)")
	}
	if c.Password != "" {
		dc.Passwd = c.Password
	}
	dc.InterpolateParams = true
	dc.MultiStatements = false
	if dc.Timeout == 0 {
		dc.Timeout = 10 * time.Second
	}
	return dc, nil
}

// QuoteIdent quotes a MySQL identifier with backticks, for the table and database names that
// statements cannot take as parameters.
func QuoteIdent(s string) string {
	out := make([]byte, 0, len(s)+2)
	out = append(out, '`')
	for i := 0; i < len(s); i++ {
		if s[i] == '`' {
			out = append(out, '`')
		}
		out = append(out, s[i])
	}
	return string(append(out, '`'))
}
