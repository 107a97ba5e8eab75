package produce

import (
	"context"
	"database/sql"
	"fmt"
)

// LoadCatalog reads customers and product codes from the classicmodels source database.
func LoadCatalog(ctx context.Context, db *sql.DB) (Catalog, error) {
	var cat Catalog
	rows, err := db.QueryContext(ctx, `SELECT customerNumber, city, country, COALESCE(creditLimit, 0) FROM customers ORDER BY customerNumber`)
	if err != nil {
		return cat, fmt.Errorf("load customers: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c Customer
		if err := rows.Scan(&c.Number, &c.City, &c.Country, &c.CreditLimit); err != nil {
			return cat, fmt.Errorf("load customers: %w", err)
		}
		cat.Customers = append(cat.Customers, c)
	}
	if err := rows.Err(); err != nil {
		return cat, fmt.Errorf("load customers: %w", err)
	}
	prows, err := db.QueryContext(ctx, `SELECT productCode FROM products ORDER BY productCode`)
	if err != nil {
		return cat, fmt.Errorf("load products: %w", err)
	}
	defer prows.Close()
	for prows.Next() {
		var code string
		if err := prows.Scan(&code); err != nil {
			return cat, fmt.Errorf("load products: %w", err)
		}
		cat.Products = append(cat.Products, code)
	}
	if err := prows.Err(); err != nil {
		return cat, fmt.Errorf("load products: %w", err)
	}
	if err := cat.Validate(); err != nil {
		return cat, fmt.Errorf("load catalog: %w", err)
	}
	return cat, nil
}
