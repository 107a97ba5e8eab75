package batch

import (
	"errors"
	"fmt"
	"strconv"
)

// colKind is how a CSV value is checked before it goes to MySQL, so that a bad value is reported
// with its file and line instead of failing a whole INSERT batch.
type colKind int

const (
	kindString colKind = iota
	kindInt
	kindDecimal // DECIMAL(10,2)
	kindDate    // YYYY-MM-DD
)

type column struct {
	name     string
	kind     colKind
	nullable bool
}

type tableSpec struct {
	name string
	cols []column
	// check runs after the per-column checks (e.g. the rating range).
	check func(values []any) error
}

func str(n string) column   { return column{name: n, kind: kindString} }
func strN(n string) column  { return column{name: n, kind: kindString, nullable: true} }
func intc(n string) column  { return column{name: n, kind: kindInt} }
func intN(n string) column  { return column{name: n, kind: kindInt, nullable: true} }
func dec(n string) column   { return column{name: n, kind: kindDecimal} }
func decN(n string) column  { return column{name: n, kind: kindDecimal, nullable: true} }
func date(n string) column  { return column{name: n, kind: kindDate} }
func dateN(n string) column { return column{name: n, kind: kindDate, nullable: true} }

// tableSpecs are the classicmodels tables in load order (foreign keys point backwards), with
// the columns of sql/mysql/001_classicmodels.sql in CSV order.
var tableSpecs = []tableSpec{
	{name: "productlines", cols: []column{str("productLine"), strN("textDescription"), strN("htmlDescription"), strN("image")}},
	{name: "offices", cols: []column{str("officeCode"), str("city"), str("phone"), str("addressLine1"), strN("addressLine2"), strN("state"), str("country"), str("postalCode"), str("territory")}},
	{name: "employees", cols: []column{intc("employeeNumber"), str("lastName"), str("firstName"), str("extension"), str("email"), str("officeCode"), intN("reportsTo"), str("jobTitle")}},
	{name: "customers", cols: []column{intc("customerNumber"), str("customerName"), str("contactLastName"), str("contactFirstName"), str("phone"), str("addressLine1"), strN("addressLine2"), str("city"), strN("state"), strN("postalCode"), str("country"), intN("salesRepEmployeeNumber"), decN("creditLimit")}},
	{name: "products", cols: []column{str("productCode"), str("productName"), str("productLine"), str("productScale"), str("productVendor"), str("productDescription"), intc("quantityInStock"), dec("buyPrice"), dec("MSRP")}},
	{name: "orders", cols: []column{intc("orderNumber"), date("orderDate"), date("requiredDate"), dateN("shippedDate"), str("status"), strN("comments"), intc("customerNumber")}},
	{name: "orderdetails", cols: []column{intc("orderNumber"), str("productCode"), intc("quantityOrdered"), dec("priceEach"), intc("orderLineNumber")}},
	{name: "payments", cols: []column{intc("customerNumber"), str("checkNumber"), date("paymentDate"), dec("amount")}},
	{name: "ratings", cols: []column{intc("customerNumber"), str("productCode"), intc("productRating")}, check: checkRating},
}

func checkRating(values []any) error {
	r, _ := strconv.Atoi(values[2].(string))
	if r < MinRating || r > MaxRating {
		return fmt.Errorf("productRating: must be between %d and %d, got %d", MinRating, MaxRating, r)
	}
	return nil
}

// Rating bounds: the source's ratings.productRating CHECK constraint and the ETL's row check.
const (
	MinRating = 1
	MaxRating = 5
)

// convert checks one CSV field against its column and returns the INSERT argument (nil = NULL).
func (c column) convert(f Field) (any, error) {
	if f.Null {
		if !c.nullable {
			return nil, fmt.Errorf("%s: must not be NULL (empty field)", c.name)
		}
		return nil, nil
	}
	switch c.kind {
	case kindInt:
		if _, err := strconv.ParseInt(f.Value, 10, 32); err != nil {
			return nil, fmt.Errorf("%s: not an integer: %q", c.name, clip(f.Value))
		}
	case kindDecimal:
		if _, err := parseDecimal2(f.Value); err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
	case kindDate:
		if !isDate(f.Value) {
			return nil, fmt.Errorf("%s: not a YYYY-MM-DD date: %q", c.name, clip(f.Value))
		}
	}
	return f.Value, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func isDate(s string) bool {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return false
	}
	for i, ch := range []byte(s) {
		if i == 4 || i == 7 {
			continue
		}
		if ch < '0' || ch > '9' {
			return false
		}
	}
	return true
}

// maxDecimal10_2 is the largest unscaled value of a DECIMAL(10,2): 99,999,999.99.
const maxDecimal10_2 = 9_999_999_999

var errDecimal = errors.New("not a DECIMAL(10,2)")

// parseDecimal2 parses a DECIMAL(10,2) text value ("21000.00", "-5", "3.5") into hundredths.
func parseDecimal2(s string) (int64, error) {
	neg := false
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		neg = s[i] == '-'
		i++
	}
	var v int64
	digits, frac := 0, -1
	for ; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '.' && frac < 0:
			frac = 0
		case ch >= '0' && ch <= '9':
			if frac >= 0 {
				if frac == 2 {
					return 0, fmt.Errorf("%w: %q has more than 2 decimals", errDecimal, clip(s))
				}
				frac++
			}
			digits++
			v = v*10 + int64(ch-'0')
			if v > maxDecimal10_2*10 {
				return 0, fmt.Errorf("%w: %q out of range", errDecimal, clip(s))
			}
		default:
			return 0, fmt.Errorf("%w: %q", errDecimal, clip(s))
		}
	}
	if digits == 0 {
		return 0, fmt.Errorf("%w: %q", errDecimal, clip(s))
	}
	for f := max(frac, 0); f < 2; f++ {
		v *= 10
	}
	if v > maxDecimal10_2 {
		return 0, fmt.Errorf("%w: %q out of range", errDecimal, clip(s))
	}
	if neg {
		v = -v
	}
	return v, nil
}

// formatDecimal2 formats hundredths as DECIMAL(10,2) text: 2100000 → "21000.00".
func formatDecimal2(v int64) string {
	neg := v < 0
	if neg {
		v = -v
	}
	s := strconv.FormatInt(v/100, 10) + "." + strconv.FormatInt(100+v%100, 10)[1:]
	if neg {
		return "-" + s
	}
	return s
}
