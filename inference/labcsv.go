package inference

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// labColumns are the columns ReadLabCSV needs (the lab's lower-case header names).
var labColumns = []string{"customernumber", "city", "country", "creditlimit", "productcode", "productline",
	"productscale", "quantityinstock", "buyprice", "msrp", "productrating"}

// ReadLabCSV decodes the lab's joined training dataset (ratings_ml_training_dataset.csv: a
// header row with the column names in any case and order, values optionally double-quoted, an
// empty field for NULL). Extra columns (state, postalcode) are ignored. A NULL or malformed
// value is an error naming the line and column, except a NULL creditlimit, which reads as 0
// like the ETL's.
func ReadLabCSV(r io.Reader) ([]Example, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("training csv: empty file, want a header row")
	}
	if err != nil {
		return nil, fmt.Errorf("training csv: header: %w", err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))] = i
	}
	for _, c := range labColumns {
		if _, ok := col[c]; !ok {
			return nil, fmt.Errorf("training csv: header has no column %q", c)
		}
	}
	var out []Example
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("training csv: %w", err)
		}
		line, _ := cr.FieldPos(0)
		var perr error
		get := func(name string) string { return rec[col[name]] }
		num := func(name string, nullable bool) float64 {
			s := strings.TrimSpace(get(name))
			if s == "" && nullable {
				return 0
			}
			v, err := strconv.ParseFloat(s, 64)
			if (err != nil || math.IsNaN(v) || math.IsInf(v, 0)) && perr == nil {
				perr = fmt.Errorf("training csv: line %d: column %s: %q is not a finite number", line, name, s)
			}
			return v
		}
		str := func(name string) string {
			s := get(name)
			if strings.TrimSpace(s) == "" && perr == nil {
				perr = fmt.Errorf("training csv: line %d: column %s: empty", line, name)
			}
			return s
		}
		cust := strings.TrimSpace(get("customernumber"))
		cn, err := strconv.ParseInt(cust, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("training csv: line %d: column customernumber: %q is not an integer", line, cust)
		}
		e := Example{
			CustomerNumber: cn,
			User:           UserFeatures{City: str("city"), Country: str("country"), CreditLimit: num("creditlimit", true)},
			ProductCode:    strings.TrimSpace(str("productcode")),
			Item: ItemFeatures{ProductLine: str("productline"), ProductScale: str("productscale"),
				QuantityInStock: num("quantityinstock", false), BuyPrice: num("buyprice", false), MSRP: num("msrp", false)},
			Rating: num("productrating", false),
		}
		if perr != nil {
			return nil, perr
		}
		if !(e.Rating >= 1 && e.Rating <= 5) {
			return nil, fmt.Errorf("training csv: line %d: column productrating: %g is outside [1, 5]", line, e.Rating)
		}
		out = append(out, e)
	}
}

// productColumns are the columns ReadProductsCSV needs (classicmodels products, any case).
var productColumns = []string{"productcode", "productline", "productscale", "quantityinstock", "buyprice", "msrp"}

// ReadProductsCSV decodes a classicmodels products table export (header row; productCode,
// productLine, productScale, quantityInStock, buyPrice, MSRP in any case and order; other
// columns ignored). `recstream train --products` uses it to embed products that have no
// rating. Errors name the line and column.
func ReadProductsCSV(r io.Reader) ([]Item, error) {
	cr := csv.NewReader(r)
	head, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("products csv: empty file, want a header row")
	}
	if err != nil {
		return nil, fmt.Errorf("products csv: header: %w", err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))] = i
	}
	for _, c := range productColumns {
		if _, ok := col[c]; !ok {
			return nil, fmt.Errorf("products csv: header has no column %q", c)
		}
	}
	var out []Item
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("products csv: %w", err)
		}
		line, _ := cr.FieldPos(0)
		it := Item{ProductCode: strings.TrimSpace(rec[col["productcode"]]), Features: ItemFeatures{
			ProductLine: rec[col["productline"]], ProductScale: rec[col["productscale"]]}}
		if it.ProductCode == "" {
			return nil, fmt.Errorf("products csv: line %d: column productCode: empty", line)
		}
		for name, dst := range map[string]*float64{"quantityinstock": &it.Features.QuantityInStock, "buyprice": &it.Features.BuyPrice, "msrp": &it.Features.MSRP} {
			s := strings.TrimSpace(rec[col[name]])
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("products csv: line %d: column %s: %q is not a finite number", line, name, s)
			}
			*dst = v
		}
		out = append(out, it)
	}
}
