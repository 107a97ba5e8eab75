package train

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/internal/csvio"
)

// labColumns are the columns ReadLabCSV needs (the lab's lower-case header names).
var labColumns = []string{"customernumber", "city", "country", "creditlimit", "productcode", "productline",
	"productscale", "quantityinstock", "buyprice", "msrp", "productrating"}

// ReadLabCSV decodes the lab's joined training dataset (ratings_ml_training_dataset.csv: a
// header row with the column names in any case and order, values optionally double-quoted). It
// reads CSV with the project's one NULL rule (package csvio): an empty unquoted field is NULL,
// a quoted "" is an empty string; the lab's Glue export quotes every non-NULL value. Extra
// columns (state, postalcode) are ignored. A NULL, empty or malformed value is an error naming
// the line and column, except a NULL creditlimit, which reads as 0 like the ETL's.
func ReadLabCSV(r io.Reader) ([]Example, error) {
	t, err := openHeaderCSV(r, "training csv", labColumns)
	if err != nil {
		return nil, err
	}
	var out []Example
	for {
		line, rec, err := t.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		var perr error
		get := func(name string) csvio.Field { return rec[t.col[name]] }
		num := func(name string, nullable bool) float64 {
			f := get(name)
			if f.Null && nullable {
				return 0
			}
			s := strings.TrimSpace(f.Value)
			v, err := strconv.ParseFloat(s, 64)
			if (err != nil || math.IsNaN(v) || math.IsInf(v, 0)) && perr == nil {
				perr = fmt.Errorf("training csv: line %d: column %s: %q is not a finite number", line, name, s)
			}
			return v
		}
		str := func(name string) string {
			s := get(name).Value
			if strings.TrimSpace(s) == "" && perr == nil {
				perr = fmt.Errorf("training csv: line %d: column %s: empty", line, name)
			}
			return s
		}
		cust := strings.TrimSpace(get("customernumber").Value)
		cn, err := strconv.ParseInt(cust, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("training csv: line %d: column customernumber: %q is not an integer", line, cust)
		}
		e := Example{
			CustomerNumber: cn,
			User:           inference.UserFeatures{City: str("city"), Country: str("country"), CreditLimit: num("creditlimit", true)},
			ProductCode:    strings.TrimSpace(str("productcode")),
			Item: inference.ItemFeatures{ProductLine: str("productline"), ProductScale: str("productscale"),
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
// columns ignored), read with the same NULL rule as ReadLabCSV. `recstream train --products`
// uses it to embed products that have no rating. Errors name the line and column.
func ReadProductsCSV(r io.Reader) ([]Item, error) {
	t, err := openHeaderCSV(r, "products csv", productColumns)
	if err != nil {
		return nil, err
	}
	var out []Item
	for {
		line, rec, err := t.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		it := Item{ProductCode: strings.TrimSpace(rec[t.col["productcode"]].Value), Features: inference.ItemFeatures{
			ProductLine: rec[t.col["productline"]].Value, ProductScale: rec[t.col["productscale"]].Value}}
		if it.ProductCode == "" {
			return nil, fmt.Errorf("products csv: line %d: column productCode: empty", line)
		}
		for name, dst := range map[string]*float64{"quantityinstock": &it.Features.QuantityInStock, "buyprice": &it.Features.BuyPrice, "msrp": &it.Features.MSRP} {
			s := strings.TrimSpace(rec[t.col[name]].Value)
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("products csv: line %d: column %s: %q is not a finite number", line, name, s)
			}
			*dst = v
		}
		out = append(out, it)
	}
}

// headerCSV reads a CSV export whose header row names its columns in any case and order, as
// the lab's and the shop's exports do; errors start with what (e.g. "training csv") and name
// the line.
type headerCSV struct {
	r     *csvio.Reader
	what  string
	col   map[string]int // lower-case column name → field index
	width int            // fields per record: the header's
}

// openHeaderCSV reads the header row and checks that it names every column of need
// (lower case). A UTF-8 BOM before the header (Excel, pandas' utf-8-sig) is ignored.
func openHeaderCSV(r io.Reader, what string, need []string) (*headerCSV, error) {
	t := &headerCSV{r: csvio.NewReader(r, what), what: what, col: map[string]int{}}
	head, err := t.r.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: empty file, want a header row", what)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", what, t.lineError(err))
	}
	for i, h := range head {
		t.col[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h.Value, "\ufeff")))] = i
	}
	for _, c := range need {
		if _, ok := t.col[c]; !ok {
			return nil, fmt.Errorf("%s: header has no column %q", what, c)
		}
	}
	t.width = len(head)
	return t, nil
}

// next returns the next record and the line it starts on; io.EOF after the last one. A
// record must have the header's number of fields; blank lines are skipped (the readers
// accepted them before they moved onto csvio).
func (t *headerCSV) next() (int, []csvio.Field, error) {
	for {
		line := t.r.Line()
		rec, err := t.r.Read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, nil, io.EOF
			}
			return 0, nil, fmt.Errorf("%s: %w", t.what, t.lineError(err))
		}
		if len(rec) == 1 && rec[0].Null && t.width > 1 {
			continue // a blank line: one NULL field where a record has several
		}
		if len(rec) != t.width {
			return 0, nil, fmt.Errorf("%s: line %d: %w: got %d, header has %d", t.what, line, csvio.ErrFieldCount, len(rec), t.width)
		}
		return line, rec, nil
	}
}

// lineError turns the reader's "what:line: reason" into "line N: reason", the form of the
// readers' other errors.
func (t *headerCSV) lineError(err error) error {
	var ce *csvio.Error
	if errors.As(err, &ce) {
		return fmt.Errorf("line %d: %w", ce.Line, ce.Err)
	}
	return err
}
