package seed

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/recstream/recstream/internal/mysqldb"
	mysqlsql "github.com/recstream/recstream/sql/mysql"
)

// deferredKeyTables are the tables whose secondary keys a generated load drops before it
// inserts and builds again afterwards: the tables that grow with the customers. ratings and
// orderdetails matter most: their productCode keys receive every row at one of N/10 places
// (one per product), and once those leaf pages outgrow the buffer pool (at 10 M ratings and
// the default 128 MB pool) nearly every insert waits for a page read, so the load slowed down
// as the tables grew. An index built after the load is one sort and a sequential write.
var deferredKeyTables = []string{"customers", "orders", "orderdetails", "ratings"}

// tableKeys is the secondary keys and foreign keys of one table, as its DDL declares them.
type tableKeys struct {
	table    string
	keys     []string // "KEY productCode (productCode)"
	keyNames []string
	fks      []string // "CONSTRAINT ratings_ibfk_2 FOREIGN KEY (productCode) REFERENCES products (productCode)"
	fkNames  []string
}

// dropClause drops the foreign keys (a foreign key needs an index on its columns, so its
// key cannot go while it stays) and then the keys.
func (k tableKeys) dropClause() string {
	var parts []string
	for _, n := range k.fkNames {
		parts = append(parts, "DROP FOREIGN KEY "+mysqldb.QuoteIdent(n))
	}
	for _, n := range k.keyNames {
		parts = append(parts, "DROP KEY "+mysqldb.QuoteIdent(n))
	}
	return strings.Join(parts, ", ")
}

// addClause restores them in DDL order, so SHOW CREATE TABLE reads as if the DDL had made them.
func (k tableKeys) addClause() string {
	var parts []string
	for _, d := range k.keys {
		parts = append(parts, "ADD "+d)
	}
	for _, d := range k.fks {
		parts = append(parts, "ADD "+d)
	}
	return strings.Join(parts, ", ")
}

// declaredKeys reads the KEY and FOREIGN KEY lines of table's CREATE TABLE in sql/mysql (one
// definition per line, as the file writes them).
func declaredKeys(table string) (tableKeys, error) {
	stmts := mysqlsql.Statements()
	for i, t := range mysqlsql.Tables {
		if t != table {
			continue
		}
		if i >= len(stmts) {
			break
		}
		k := tableKeys{table: table}
		for _, line := range strings.Split(stmts[i], "\n") {
			def := strings.TrimSuffix(strings.TrimSpace(line), ",")
			f := strings.Fields(def)
			switch {
			case len(f) >= 3 && f[0] == "KEY":
				k.keys = append(k.keys, def)
				k.keyNames = append(k.keyNames, f[1])
			case len(f) >= 4 && f[0] == "CONSTRAINT" && f[2] == "FOREIGN":
				k.fks = append(k.fks, def)
				k.fkNames = append(k.fkNames, f[1])
			}
		}
		return k, nil
	}
	return tableKeys{}, fmt.Errorf("table %s: not in the classicmodels DDL", table)
}

// deferKeys drops the secondary and foreign keys of deferredKeyTables on conn (foreign-key
// checks must be off for the session) and returns what restoreKeys needs.
func deferKeys(ctx context.Context, conn *sql.Conn) ([]tableKeys, error) {
	var out []tableKeys
	for _, t := range deferredKeyTables {
		k, err := declaredKeys(t)
		if err != nil {
			return out, err
		}
		if len(k.keys)+len(k.fks) == 0 {
			continue
		}
		if _, err := conn.ExecContext(ctx, "ALTER TABLE "+mysqldb.QuoteIdent(t)+" "+k.dropClause()); err != nil {
			return out, fmt.Errorf("drop keys of %s before the load: %w", t, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// restoreKeys builds the keys again, one ALTER TABLE per table (InnoDB sorts each index once).
// With foreign-key checks off the foreign keys are added without scanning the rows: the
// generator's data is consistent by construction. onTable is told when a table starts.
func restoreKeys(ctx context.Context, conn *sql.Conn, keys []tableKeys, log *zap.Logger, onTable func(table string)) error {
	for _, k := range keys {
		if onTable != nil {
			onTable(k.table)
		}
		start := time.Now()
		log.Info("seed building keys", zap.String("stage", "keys"), zap.String("table", k.table),
			zap.Strings("keys", k.keyNames))
		if _, err := conn.ExecContext(ctx, "ALTER TABLE "+mysqldb.QuoteIdent(k.table)+" "+k.addClause()); err != nil {
			return fmt.Errorf("build keys of %s after the load: %w", k.table, err)
		}
		log.Info("seed built keys", zap.String("stage", "keys"), zap.String("table", k.table),
			zap.Duration("duration", time.Since(start)))
	}
	return nil
}
