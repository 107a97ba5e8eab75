package batch

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
)

// OpenMySQL returns a pool for the source database of c, with password set from the caller
// (cmd reads RECSTREAM_MYSQL_PASSWORD into c.Password). It validates c and does no I/O: the
// first query connects. Parameters are interpolated client-side (one round trip per statement,
// which multi-row INSERT batches need); the driver's default handshake collation is utf8mb4. The caller
// closes the pool.
func OpenMySQL(c MySQLConfig) (*sql.DB, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("mysql config: %w", err)
	}
	dc, err := mysqlDriverConfig(c)
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

// MySQLDatabase returns the database name of c's DSN ("" when the DSN names none).
func MySQLDatabase(c MySQLConfig) (string, error) {
	dc, err := mysql.ParseDSN(c.DSN)
	if err != nil {
		return "", errors.New("mysql dsn: cannot parse (value not shown: it may hold credentials)")
	}
	return dc.DBName, nil
}

// WithDatabase returns c with the DSN's database replaced by db.
func (c MySQLConfig) WithDatabase(db string) (MySQLConfig, error) {
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
func EnsureDatabase(ctx context.Context, c MySQLConfig) error {
	name, err := MySQLDatabase(c)
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
	db, err := OpenMySQL(noDB)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(name)+" CHARACTER SET utf8mb4"); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

func mysqlDriverConfig(c MySQLConfig) (*mysql.Config, error) {
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

// quoteIdent quotes a MySQL identifier with backticks.
func quoteIdent(s string) string {
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
