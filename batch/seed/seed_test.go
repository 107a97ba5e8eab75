package seed_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/batch/seed"
	"github.com/recstream/recstream/batch/seed/seedtest"
	"github.com/recstream/recstream/internal/stacktest"
	mysqlsql "github.com/recstream/recstream/sql/mysql"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestSeedSharedDataKeepsValuesExact(t *testing.T) {
	db, _ := seedtest.DB(t)
	seedtest.Shared(t, db)
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
	s, _ := seed.NewSeeder(db, seed.DefaultConfig(), nil)
	if err := s.CreateSchema(ctx, false); !errors.Is(err, seed.ErrAlreadySeeded) {
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
			db, _ := seedtest.DB(t)
			dir := t.TempDir()
			for _, table := range mysqlsql.Tables {
				b, err := os.ReadFile(filepath.Join(shared, table+".csv"))
				if err != nil {
					t.Fatal(err)
				}
				s := string(b)
				if table+".csv" == tc.file {
					if s2 := tc.mutate(s); s2 != s {
						s = s2
					} else {
						t.Fatal("mutation changed nothing")
					}
				}
				if err := os.WriteFile(filepath.Join(dir, table+".csv"), []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s, _ := seed.NewSeeder(db, seed.DefaultConfig(), nil)
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
