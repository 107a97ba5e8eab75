package seed

import (
	"fmt"
	"strconv"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/internal/csvio"
	"github.com/recstream/recstream/internal/mysqldb"
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
	if r < dataset.MinRating || r > dataset.MaxRating {
		return fmt.Errorf("productRating: must be between %d and %d, got %d", dataset.MinRating, dataset.MaxRating, r)
	}
	return nil
}

// convert checks one CSV field against its column and returns the INSERT argument (nil = NULL).
func (c column) convert(f csvio.Field) (any, error) {
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
		if _, err := mysqldb.ParseDecimal2(f.Value); err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
	case kindDate:
		if !isDate(f.Value) {
			return nil, fmt.Errorf("%s: not a YYYY-MM-DD date: %q", c.name, clip(f.Value))
		}
	}
	return f.Value, nil
}

// clip shortens a value quoted in an error message.
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
