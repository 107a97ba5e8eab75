// Package mysqlsql holds the MySQL DDL of the classicmodels source database (plus the lab's
// ratings table), embedded so that `recstream batch seed` and the tests apply the same schema.
package mysqlsql

import (
	"embed"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.sql
var files embed.FS

// Tables lists the classicmodels tables in dependency order: a table's foreign keys point only
// at tables before it. Drop them in reverse order.
var Tables = []string{"productlines", "offices", "employees", "customers", "products", "orders", "orderdetails", "payments", "ratings"}

// Statements returns the DDL statements of every embedded .sql file, files in name order,
// statements in file order, without the terminating ";". Each statement is idempotent
// (CREATE TABLE IF NOT EXISTS). The files are fixed at build time, so it cannot fail at run time
// unless the embedded files are malformed, which a unit test rules out.
func Statements() []string {
	names, _ := fs.Glob(files, "*.sql")
	sort.Strings(names)
	var out []string
	for _, n := range names {
		b, _ := files.ReadFile(n)
		var cur strings.Builder
		for _, line := range strings.Split(string(b), "\n") {
			trimmed := strings.TrimSpace(line)
			if strings.HasPrefix(trimmed, "--") || (trimmed == "" && cur.Len() == 0) {
				continue
			}
			cur.WriteString(line)
			cur.WriteByte('\n')
			if strings.HasSuffix(trimmed, ";") {
				s := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
				out = append(out, s)
				cur.Reset()
			}
		}
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
	}
	return out
}
