package batch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recstream/recstream/internal/stacktest"
)

func TestSeedSharedDataKeepsValuesExact(t *testing.T) {
	db, _ := testMySQL(t)
	seedShared(t, db)
	ctx := testCtx(t)
	for _, tc := range []struct {
		query string
		want  string
	}{
		{"SELECT COUNT(*) FROM customers", "122"},
		{"SELECT COUNT(*) FROM products", "110"},
		{"SELECT COUNT(*) FROM productlines", "7"},
		{"SELECT COUNT(*) FROM orders", "326"},
		{"SELECT COUNT(*) FROM orderdetails", "2996"},
		{"SELECT COUNT(*) FROM payments", "273"},
		{"SELECT COUNT(*) FROM employees", "23"},
		{"SELECT COUNT(*) FROM offices", "7"},
		{"SELECT COUNT(*) FROM ratings", "2532"},
		{"SELECT COUNT(*) FROM customers WHERE state IS NULL", "73"},
		{"SELECT COUNT(*) FROM customers WHERE addressLine2 IS NULL", "100"},
		{"SELECT COUNT(*) FROM customers WHERE postalCode IS NULL", "7"},
		{"SELECT COUNT(*) FROM orders WHERE comments IS NULL", "246"},
		{"SELECT COUNT(*) FROM employees WHERE reportsTo IS NULL", "1"},
		{"SELECT COUNT(*) FROM products WHERE productDescription LIKE CONCAT('%', CHAR(13, 10), '%')", "7"},
		{"SELECT CONCAT('[', contactFirstName, ']') FROM customers WHERE customerNumber = 103", "[Carine ]"},
		{"SELECT city FROM customers WHERE customerNumber = 233", "Montréal"},
		{"SELECT creditLimit FROM customers WHERE customerNumber = 103", "21000.00"},
		{"SELECT productRating FROM ratings WHERE customerNumber = 112 AND productCode = 'S18_1129'", "5"},
	} {
		var got string
		if err := db.QueryRowContext(ctx, tc.query).Scan(&got); err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		if got != tc.want {
			t.Errorf("%s = %q, want %q", tc.query, got, tc.want)
		}
	}
	s, _ := NewSeeder(db, DefaultConfig(), nil)
	if err := s.CreateSchema(ctx, false); !errors.Is(err, ErrAlreadySeeded) {
		t.Fatalf("seeding a loaded database without replace: got %v, want ErrAlreadySeeded", err)
	}
}

func TestSeedBadCSVNamesFileAndLine(t *testing.T) {
	shared := stacktest.ClassicModels(t)
	tests := []struct {
		name   string
		file   string
		mutate func(string) string
		want   string
	}{
		{"rating out of range", "ratings.csv", func(s string) string { return s + "496,S10_1678,9\n" }, "ratings.csv:2534: productRating: must be between 1 and 5, got 9"},
		{"not an integer", "ratings.csv", func(s string) string { return strings.Replace(s, "103,S10_2016,3", "103,S10_2016,three", 1) }, "ratings.csv:2: productRating: not an integer"},
		{"missing field", "customers.csv", func(s string) string { return strings.Replace(s, ",1370,21000.00\n", ",21000.00\n", 1) }, "customers.csv:2: wrong number of fields: got 12, header has 13"},
		{"NULL in NOT NULL", "products.csv", func(s string) string { return strings.Replace(s, ",7933,48.81,95.70", ",,48.81,95.70", 1) }, "products.csv:2: quantityInStock: must not be NULL"},
		{"unterminated quote", "products.csv", func(s string) string { return s + "\"S99_9999,broken\n" }, "products.csv:120: quoted field not terminated"},
		{"unknown product (foreign key)", "ratings.csv", func(s string) string { return s + "496,NOPE_1,3\n" }, "insert ratings rows ratings.csv:"},
		{"bad header", "offices.csv", func(s string) string { return strings.Replace(s, "officeCode,", "officeKode,", 1) }, `offices.csv:1: header: missing column "officeCode"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, _ := testMySQL(t)
			dir := t.TempDir()
			for _, spec := range tableSpecs {
				b, err := os.ReadFile(filepath.Join(shared, spec.name+".csv"))
				if err != nil {
					t.Fatal(err)
				}
				s := string(b)
				if spec.name+".csv" == tc.file {
					if s2 := tc.mutate(s); s2 != s {
						s = s2
					} else {
						t.Fatal("mutation changed nothing")
					}
				}
				if err := os.WriteFile(filepath.Join(dir, spec.name+".csv"), []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s, _ := NewSeeder(db, DefaultConfig(), nil)
			ctx := testCtx(t)
			if err := s.CreateSchema(ctx, false); err != nil {
				t.Fatal(err)
			}
			_, err := s.LoadCSVDir(ctx, dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestSeedGeneratedThenETL(t *testing.T) {
	db, _ := testMySQL(t)
	ctx := testCtx(t)
	g, err := NewGenerator(7, 100, 20)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := NewSeeder(db, DefaultConfig(), nil)
	for _, replace := range []bool{false, true} {
		if err := s.CreateSchema(ctx, replace); err != nil {
			t.Fatal(err)
		}
		st, err := s.LoadGenerated(ctx, g, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Rows["ratings"] != 100*20 || st.Rows["orderdetails"] != 100*20 || st.Rows["customers"] != 100 || st.Rows["payments"] != st.Rows["orders"] {
			t.Fatalf("loaded %v", st.Rows)
		}
	}
	// The generator is consistent: every foreign key resolves (checks were off while loading).
	for _, q := range []string{
		"SELECT COUNT(*) FROM ratings r LEFT JOIN products p ON p.productCode = r.productCode WHERE p.productCode IS NULL",
		"SELECT COUNT(*) FROM customers c LEFT JOIN employees e ON e.employeeNumber = c.salesRepEmployeeNumber WHERE c.salesRepEmployeeNumber IS NOT NULL AND e.employeeNumber IS NULL",
		"SELECT COUNT(*) FROM orderdetails d LEFT JOIN orders o ON o.orderNumber = d.orderNumber WHERE o.orderNumber IS NULL",
		"SELECT COUNT(*) FROM ratings r LEFT JOIN (SELECT DISTINCT o.customerNumber, d.productCode FROM orders o JOIN orderdetails d ON d.orderNumber = o.orderNumber) b ON b.customerNumber = r.customerNumber AND b.productCode = r.productCode WHERE b.productCode IS NULL",
	} {
		var n int
		if err := db.QueryRowContext(ctx, q).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s = %d (%v), want 0", q, n, err)
		}
	}
	store := fileStore(t)
	res := runETL(t, ctx, newETL(t, db, store, ETLOptions{}))
	if res.Rows != 2000 || res.Partitions != 100 {
		t.Fatalf("etl of generated data: %+v", res)
	}
	// The generator's own join is what the ETL published.
	_, published := readAll(t, ctx, store)
	var direct []TrainingRow
	_ = g.EachTrainingRow(ctx, func(r TrainingRow) error { direct = append(direct, r); return nil })
	if strings.Join(keys(direct), "\n") != strings.Join(keys(published), "\n") {
		t.Fatal("EachTrainingRow differs from the ETL's dataset of the seeded data")
	}
	// Exercise the file roll-over: at most 7 rows per file.
	cfg := DefaultConfig()
	cfg.RowGroupRows = 7
	e, err := NewETL(db, store, cfg, ETLOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res = runETL(t, ctx, e)
	m, rows := readAll(t, context.Background(), store)
	if len(rows) != 2000 || res.Files <= 100 {
		t.Fatalf("%d rows in %d files", len(rows), res.Files)
	}
	for _, p := range m.Partitions {
		for _, f := range p.Files {
			if f.Rows > 7 {
				t.Fatalf("file %s has %d rows, row_group_rows is 7", f.Key, f.Rows)
			}
		}
	}
	assertExactlyManifest(t, ctx, store, m)
}
