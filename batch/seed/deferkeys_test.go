package seed

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/recstream/recstream/internal/mysqldb"
	"github.com/recstream/recstream/internal/stacktest"
	mysqlsql "github.com/recstream/recstream/sql/mysql"
)

func TestDeclaredKeysReadTheDDL(t *testing.T) {
	k, err := declaredKeys("ratings")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(k.keyNames, ","), "productCode"; got != want {
		t.Errorf("ratings keys = %s, want %s", got, want)
	}
	if got, want := strings.Join(k.fkNames, ","), "ratings_ibfk_1,ratings_ibfk_2"; got != want {
		t.Errorf("ratings foreign keys = %s, want %s", got, want)
	}
	if got, want := k.addClause(), "ADD KEY productCode (productCode), ADD CONSTRAINT ratings_ibfk_1 FOREIGN KEY (customerNumber) REFERENCES customers (customerNumber), ADD CONSTRAINT ratings_ibfk_2 FOREIGN KEY (productCode) REFERENCES products (productCode)"; got != want {
		t.Errorf("ratings add clause:\n got %s\nwant %s", got, want)
	}
	if _, err := declaredKeys("nope"); err == nil {
		t.Error("declaredKeys of an unknown table: no error")
	}
	for _, table := range deferredKeyTables {
		k, err := declaredKeys(table)
		if err != nil {
			t.Fatal(err)
		}
		if len(k.keys) == 0 {
			t.Errorf("%s declares no secondary key: nothing to defer", table)
		}
	}
}

// showCreate returns SHOW CREATE TABLE of every classicmodels table in db's database.
func showCreate(t *testing.T, ctx context.Context, s *Seeder) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, table := range mysqlsql.Tables {
		var name, ddl string
		if err := s.db.QueryRowContext(ctx, "SHOW CREATE TABLE "+mysqldb.QuoteIdent(table)).Scan(&name, &ddl); err != nil {
			t.Fatalf("show create table %s: %v", table, err)
		}
		out[table] = ddl
	}
	return out
}

// The keys a generated load drops and builds again end as the DDL declares them, and the
// load logs its progress lines.
func TestLoadGeneratedRestoresTheSchemaAndLogsProgress(t *testing.T) {
	db := testDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	core, logs := observer.New(zap.InfoLevel)
	s, err := NewSeeder(db, DefaultConfig(), zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	s.progressEvery = 20 * time.Millisecond
	if err := s.CreateSchema(ctx, true); err != nil {
		t.Fatal(err)
	}
	want := showCreate(t, ctx, s)
	g, err := NewGenerator(7, 3000, 30)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.LoadGenerated(ctx, g, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rows["ratings"] != g.TotalRatings() || st.Rows["ratings"] != 3000*30 {
		t.Errorf("ratings loaded = %d, TotalRatings = %d, want %d", st.Rows["ratings"], g.TotalRatings(), 3000*30)
	}
	got := showCreate(t, ctx, s)
	for _, table := range mysqlsql.Tables {
		if got[table] != want[table] {
			t.Errorf("%s after the load:\n%s\nwant (as created):\n%s", table, got[table], want[table])
		}
	}
	// The productCode key serves the query the ETL and the tests run by product.
	var plan string
	var id int
	var selType, tbl, typ, possible, key, keyLen, ref, rows, extra any
	if err := db.QueryRowContext(ctx, "EXPLAIN SELECT COUNT(*) FROM ratings WHERE productCode = 'S18_1000'").
		Scan(&id, &selType, &tbl, &typ, &possible, &key, &keyLen, &ref, &rows, &extra); err != nil {
		t.Fatal(err)
	}
	if plan = string(asBytes(key)); plan != "productCode" {
		t.Errorf("EXPLAIN by productCode uses key %q, want productCode", plan)
	}

	if n := logs.FilterMessage("seed built keys").Len(); n != len(deferredKeyTables) {
		t.Errorf("%d 'seed built keys' lines, want %d", n, len(deferredKeyTables))
	}
	if logs.FilterMessage("seed started").Len() != 1 || logs.FilterMessage("seed rows inserted").Len() != 1 {
		t.Errorf("want one 'seed started' and one 'seed rows inserted' line, got %v", logs.All())
	}
	lines := logs.FilterMessage("seed progress").All()
	if len(lines) == 0 {
		t.Fatal("no 'seed progress' line")
	}
	for _, l := range lines {
		f := l.ContextMap()
		for _, k := range []string{"stage", "ratings_done", "ratings_total", "rows_done", "elapsed"} {
			if _, ok := f[k]; !ok {
				t.Errorf("progress line %v lacks %s", f, k)
			}
		}
		if f["ratings_total"] != int64(3000*30) {
			t.Errorf("ratings_total = %v, want %d", f["ratings_total"], 3000*30)
		}
	}
}

func asBytes(v any) []byte {
	switch b := v.(type) {
	case []byte:
		return b
	case string:
		return []byte(b)
	}
	return nil
}

// testDB is seedtest.DB without the import cycle (seedtest imports seed).
func testDB(t *testing.T) *sql.DB {
	t.Helper()
	stacktest.MySQLAddr(t)
	name := stacktest.UniqueName("rs_")
	cfg := mysqldb.DefaultConfig()
	cfg.DSN = stacktest.Value(t, "mysql.dsn")
	cfg.Password = stacktest.DBPassword("RECSTREAM_MYSQL_PASSWORD")
	cfg, err := cfg.WithDatabase(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := mysqldb.EnsureDatabase(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	db, err := mysqldb.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+mysqldb.QuoteIdent(name)); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		db.Close()
	})
	return db
}
