package worker

import (
	"errors"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

var lim = Limits{MaxBytes: 4096, MaxBrowseHistory: 3}

func TestDecodeValid(t *testing.T) {
	ev, err := Decode([]byte(`{"session_id":"s1","customer_number":478,"city":"Pasadena","country":"USA","credit_limit":59811.5,
		"browse_history":[{"product_code":"A","quantity":"1","in_shopping_cart":true},{"product_code":"B","quantity":7,"in_shopping_cart":false},
		{"product_code":"C","quantity":2.0,"in_shopping_cart":false}]}`), lim)
	if err != nil {
		t.Fatal(err)
	}
	if ev.SessionID != "s1" || ev.CustomerNumber != 478 || ev.City != "Pasadena" || ev.CreditLimit != 59811.5 || len(ev.BrowseHistory) != 3 {
		t.Fatalf("decoded %+v", ev)
	}
	if q := []int64{ev.BrowseHistory[0].Quantity, ev.BrowseHistory[1].Quantity, ev.BrowseHistory[2].Quantity}; q[0] != 1 || q[1] != 7 || q[2] != 2 {
		t.Fatalf("quantities %v", q)
	}
}

func TestDecodeErrors(t *testing.T) {
	base := func(repl string) string {
		return strings.Replace(`{"session_id":"s","customer_number":1,"city":"c","country":"x","credit_limit":1,"browse_history":[{"product_code":"A","quantity":1,"in_shopping_cart":true}]}`, `"city":"c"`, repl, 1)
	}
	for _, tc := range []struct {
		name, in string
		reason   Reason
		field    string
	}{
		{"not json", `{"session_id":`, ReasonBadJSON, ""},
		{"array", `[1,2]`, ReasonBadJSON, ""},
		{"null", `null`, ReasonBadJSON, ""},
		{"trailing", base(`"city":"c"`) + `{}`, ReasonBadJSON, ""},
		{"too large", `{"session_id":"` + strings.Repeat("x", 5000) + `"}`, ReasonTooLarge, ""},
		{"missing city", base(`"cityx":"c"`), ReasonUnknownField, "cityx"},
		{"city null", base(`"city":null`), ReasonMissingField, "city"},
		{"city number", base(`"city":5`), ReasonInvalidField, "city"},
		{"customer string", strings.Replace(base(`"city":"c"`), `"customer_number":1`, `"customer_number":"1"`, 1), ReasonInvalidField, "customer_number"},
		{"customer fraction", strings.Replace(base(`"city":"c"`), `"customer_number":1`, `"customer_number":1.5`, 1), ReasonInvalidField, "customer_number"},
		{"credit string", strings.Replace(base(`"city":"c"`), `"credit_limit":1`, `"credit_limit":"1"`, 1), ReasonInvalidField, "credit_limit"},
		{"credit negative", strings.Replace(base(`"city":"c"`), `"credit_limit":1`, `"credit_limit":-1`, 1), ReasonInvalidField, "credit_limit"},
		{"no history", strings.Replace(base(`"city":"c"`), `,"browse_history":[{"product_code":"A","quantity":1,"in_shopping_cart":true}]`, ``, 1), ReasonMissingField, "browse_history"},
		{"history object", strings.Replace(base(`"city":"c"`), `[{"product_code":"A","quantity":1,"in_shopping_cart":true}]`, `{}`, 1), ReasonInvalidField, "browse_history"},
		{"history too long", strings.Replace(base(`"city":"c"`), `[{"product_code":"A","quantity":1,"in_shopping_cart":true}]`, `[{},{},{},{}]`, 1), ReasonHistoryTooLong, "browse_history"},
		{"quantity word", strings.Replace(base(`"city":"c"`), `"quantity":1`, `"quantity":"one"`, 1), ReasonInvalidField, "browse_history[0].quantity"},
		{"quantity negative", strings.Replace(base(`"city":"c"`), `"quantity":1`, `"quantity":-2`, 1), ReasonInvalidField, "browse_history[0].quantity"},
		{"cart string", strings.Replace(base(`"city":"c"`), `"in_shopping_cart":true`, `"in_shopping_cart":"yes"`, 1), ReasonInvalidField, "browse_history[0].in_shopping_cart"},
		{"cart missing", strings.Replace(base(`"city":"c"`), `,"in_shopping_cart":true`, ``, 1), ReasonMissingField, "browse_history[0].in_shopping_cart"},
		{"empty product", strings.Replace(base(`"city":"c"`), `"product_code":"A"`, `"product_code":""`, 1), ReasonInvalidField, "browse_history[0].product_code"},
		{"extra item field", strings.Replace(base(`"city":"c"`), `"product_code":"A"`, `"product_code":"A","price":3`, 1), ReasonUnknownField, "browse_history[0].price"},
		// Bounds: whatever Decode accepts, the model can encode and the schema can store.
		{"credit 1e300", strings.Replace(base(`"city":"c"`), `"credit_limit":1`, `"credit_limit":1e300`, 1), ReasonInvalidField, "credit_limit"},
		{"credit above 1e12", strings.Replace(base(`"city":"c"`), `"credit_limit":1`, `"credit_limit":1000000000000.01`, 1), ReasonInvalidField, "credit_limit"},
		{"credit overflow", strings.Replace(base(`"city":"c"`), `"credit_limit":1`, `"credit_limit":1e999`, 1), ReasonInvalidField, "credit_limit"},
		{"quantity 1e300", strings.Replace(base(`"city":"c"`), `"quantity":1`, `"quantity":1e300`, 1), ReasonInvalidField, "browse_history[0].quantity"},
		{"quantity above range", strings.Replace(base(`"city":"c"`), `"quantity":1`, `"quantity":"1000001"`, 1), ReasonInvalidField, "browse_history[0].quantity"},
		{"customer above int32", strings.Replace(base(`"city":"c"`), `"customer_number":1`, `"customer_number":2147483648`, 1), ReasonInvalidField, "customer_number"},
		{"customer negative", strings.Replace(base(`"city":"c"`), `"customer_number":1`, `"customer_number":-1`, 1), ReasonInvalidField, "customer_number"},
		{"NUL in city", base(`"city":"a\u0000b"`), ReasonInvalidField, "city"},
		{"NUL in product", strings.Replace(base(`"city":"c"`), `"product_code":"A"`, `"product_code":"\u0000"`, 1), ReasonInvalidField, "browse_history[0].product_code"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			strict := lim
			strict.RejectUnknown = true
			_, err := Decode([]byte(tc.in), strict)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want *DecodeError", err)
			}
			if de.Reason != tc.reason || de.Field != tc.field {
				t.Fatalf("got reason %q field %q (%v), want %q %q", de.Reason, de.Field, err, tc.reason, tc.field)
			}
		})
	}
}

// TestDecodeEdgeValuesAccepted: values at the edges of the ranges are accepted unchanged (or
// normalised: -0 is 0), and a lone surrogate escape becomes U+FFFD as in encoding/json.
func TestDecodeEdgeValuesAccepted(t *testing.T) {
	base := `{"session_id":"s","customer_number":2147483647,"city":"\ud800x","country":"x","credit_limit":CL,"browse_history":[{"product_code":"'; DROP TABLE item_emb; --","quantity":"1000000","in_shopping_cart":true}]}`
	for _, tc := range []struct {
		credit string
		want   float64
	}{{"5e-324", 5e-324}, {"-0.0", 0}, {"1e12", 1e12}, {"0", 0}} {
		ev, err := Decode([]byte(strings.Replace(base, "CL", tc.credit, 1)), lim)
		if err != nil {
			t.Fatalf("credit_limit %s: %v", tc.credit, err)
		}
		if ev.CreditLimit != tc.want || math.Signbit(ev.CreditLimit) || ev.City != "\ufffdx" || ev.CustomerNumber != MaxCustomerNumber || ev.BrowseHistory[0].Quantity != MaxQuantity {
			t.Fatalf("credit_limit %s: decoded %+v", tc.credit, ev)
		}
	}
	// An empty browse history is valid: the event has no anchor.
	ev, err := Decode([]byte(`{"session_id":"s","customer_number":1,"city":"","country":"x","credit_limit":1,"browse_history":[]}`), lim)
	if err != nil || ev.Anchor() != "" {
		t.Fatalf("empty history: %+v, %v", ev, err)
	}
}

// TestDecodeUnknownFieldsIgnored: by default an event with fields outside the schema (top
// level and in items) is processed; the fields are dropped and named once each.
func TestDecodeUnknownFieldsIgnored(t *testing.T) {
	in := `{"session_id":"s","coupon":"X","customer_number":1,"city":"c","country":"x","credit_limit":1,"coupon":"Y",
		"browse_history":[{"product_code":"A","quantity":1,"in_shopping_cart":true,"price":3},{"product_code":"B","quantity":1,"in_shopping_cart":false,"price":4}]}`
	ev, err := Decode([]byte(in), lim)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ev.Unknown, []string{"coupon", "browse_history[].price"}) || len(ev.BrowseHistory) != 2 || ev.Anchor() != "A" {
		t.Fatalf("decoded %+v", ev)
	}
}

// manyKeysEvent is a valid event carrying n distinct unknown top-level keys ("0", "1", ...,
// base 36) and two unknown keys in its browse item.
func manyKeysEvent(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"session_id":"s","customer_number":1,"city":"c","country":"x","credit_limit":1,`)
	for i := range n {
		b.WriteString(`"` + strconv.FormatInt(int64(i), 36) + `":0,`)
	}
	b.WriteString(`"browse_history":[{"product_code":"A","quantity":1,"in_shopping_cart":true,"price":3,"tax":1}]}`)
	return []byte(b.String())
}

// TestDecodeManyUnknownFieldsBounded pins quadratic unknown-field tracking: each dropped name
// was checked against every name listed so far, so a 64 KiB event of ~8,000 distinct keys cost
// ~32 M string comparisons. Decode now lists at most MaxUnknownNames names (the check per key
// is bounded, the work linear) and counts the rest; unknown_fields_total counts exactly what it
// counted before (32 names, the rest as other).
func TestDecodeManyUnknownFieldsBounded(t *testing.T) {
	const n = 8000
	b := manyKeysEvent(n)
	if len(b) > 64<<10 {
		t.Fatalf("event of %d bytes, want one within the default max_event_bytes", len(b))
	}
	ev, err := Decode(b, Limits{MaxBytes: 64 << 10, MaxBrowseHistory: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Unknown) != MaxUnknownNames || ev.UnknownOmitted != n+2-MaxUnknownNames {
		t.Fatalf("%d names listed, %d omitted; want %d and %d", len(ev.Unknown), ev.UnknownOmitted, MaxUnknownNames, n+2-MaxUnknownNames)
	}
	for i, name := range ev.Unknown {
		if name != strconv.FormatInt(int64(i), 36) {
			t.Fatalf("name %d is %q: want the first names in order of appearance", i, name)
		}
	}
	// A name already listed is not counted again.
	ev, err = Decode([]byte(strings.Replace(string(b), `"browse_history"`, `"0":1,"1":2,"browse_history"`, 1)), Limits{MaxBytes: 64 << 10})
	if err != nil || ev.UnknownOmitted != n+2-MaxUnknownNames {
		t.Fatalf("repeated listed names: %d omitted, %v", ev.UnknownOmitted, err)
	}

	dir, err := objstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newSeamEnv(t, testConfig(), dir, fakeRecommender{})
	e.process(e.records(b))
	if v := testutil.ToFloat64(e.metrics.UnknownFields.WithLabelValues("other")); v != n+2-maxUnknownFieldLabels {
		t.Fatalf("unknown_fields_total{field=other} = %v, want %d", v, n+2-maxUnknownFieldLabels)
	}
	if v := testutil.ToFloat64(e.metrics.UnknownFields.WithLabelValues("0")); v != 1 {
		t.Fatalf(`unknown_fields_total{field="0"} = %v, want 1`, v)
	}
}

func TestAnchor(t *testing.T) {
	item := func(code string, cart bool) BrowseItem { return BrowseItem{ProductCode: code, InShoppingCart: cart} }
	for _, tc := range []struct {
		name string
		hist []BrowseItem
		want string
	}{
		{"empty", nil, ""},
		{"last cart item wins", []BrowseItem{item("A", true), item("B", false), item("C", true), item("D", false)}, "C"},
		{"no cart: last browsed", []BrowseItem{item("A", false), item("B", false)}, "B"},
		{"single", []BrowseItem{item("A", false)}, "A"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := Event{BrowseHistory: tc.hist}
			if got := ev.Anchor(); got != tc.want {
				t.Fatalf("Anchor() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDecodeLabExamples(t *testing.T) {
	b, err := os.ReadFile(stacktest.LabFile(t, "example_record.json"))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := Decode(b, Limits{MaxBytes: 65536, MaxBrowseHistory: 100})
	if err != nil || ev.Anchor() != "Product1" {
		t.Fatalf("example_record.json: %+v, %v", ev, err)
	}
	// The lab's enriched record carries the output fields: with unknown_fields: reject the
	// decoder names the first; with ignore (the default) it drops and names both.
	b, err = os.ReadFile(stacktest.LabFile(t, "delivery-stream-one-record.json"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Decode(b, Limits{MaxBytes: 65536, MaxBrowseHistory: 100, RejectUnknown: true})
	var de *DecodeError
	if !errors.As(err, &de) || de.Reason != ReasonUnknownField {
		t.Fatalf("enriched record: err %v, want unknown_field", err)
	}
	ev, err = Decode(b, Limits{MaxBytes: 65536, MaxBrowseHistory: 100})
	if err != nil || !reflect.DeepEqual(ev.Unknown, []string{"recommended_items", "similar_items"}) || ev.CustomerNumber == 0 {
		t.Fatalf("enriched record with unknown fields ignored: %+v, %v", ev, err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, n := range []string{"example_record.json", "delivery-stream-one-record.json"} {
		b, err := os.ReadFile(stacktest.LabFile(f, n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"session_id":"45ba9939","customer_number":478,"city":"Pasadena","country":"USA","credit_limit":59811,"browse_history":[{"product_code":"S50_1514","quantity":"1","in_shopping_cart":true}]}`))
	f.Add([]byte(`{"quantity":"1e3"}`))
	f.Add([]byte(`{"session_id":"s","customer_number":1e2,"\u0063ity":"P\u00e4s","country":"\xff","credit_limit":0,"browse_history":[{"product_code":"A","quantity":" 2.0 ","in_shopping_cart":false,"quantity":3}]}`))
	f.Add([]byte(`{"session_id":"s","customer_number":1,"city":"c","country":"x","credit_limit":1,"browse_history":[null,{"x":1}]}`))
	f.Add([]byte(` {"session_id" : "s" , "customer_number" : -0 , "city":"","country":"x","credit_limit":1e308,"browse_history":[ ] } `))
	f.Add(manyKeysEvent(1000)) // more unknown names than Decode lists
	f.Fuzz(func(t *testing.T, b []byte) {
		lim := Limits{MaxBytes: 8192, MaxBrowseHistory: 10}
		ev, err := Decode(b, lim)
		// Differential: the fast decoder accepts and rejects exactly what the original
		// map-based one does, with the same values, reasons and fields.
		ref, refErr := decodeReference(b, lim)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("Decode error %v, reference error %v", err, refErr)
		}
		// The reference lists unknown fields in map order.
		slices.Sort(ev.Unknown)
		slices.Sort(ref.Unknown)
		if err == nil && len(ref.Unknown) > MaxUnknownNames {
			// Decode lists the first MaxUnknownNames and counts the rest.
			for _, name := range ev.Unknown {
				if _, ok := slices.BinarySearch(ref.Unknown, name); !ok {
					t.Fatalf("Decode lists %q, the reference does not", name)
				}
			}
			if len(ev.Unknown) != MaxUnknownNames || ev.UnknownOmitted < len(ref.Unknown)-MaxUnknownNames {
				t.Fatalf("Decode lists %d names and omits %d; the reference lists %d", len(ev.Unknown), ev.UnknownOmitted, len(ref.Unknown))
			}
			ev.Unknown, ev.UnknownOmitted = ref.Unknown, 0
		}
		if err == nil && !reflect.DeepEqual(ev, ref) {
			t.Fatalf("Decode %+v, reference %+v", ev, ref)
		}
		if err != nil {
			var de, rde *DecodeError
			if errors.As(err, &de) && errors.As(refErr, &rde) && (de.Reason != rde.Reason ||
				// With several unknown fields the reference names a random one (map order).
				de.Field != rde.Field && de.Reason != ReasonUnknownField) {
				t.Fatalf("Decode error %v, reference error %v", err, refErr)
			}
		}
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.Reason == "" {
				t.Fatalf("error %v is not a *DecodeError with a reason", err)
			}
			return
		}
		if ev.SessionID == "" || len(ev.BrowseHistory) > 10 || ev.CreditLimit < 0 {
			t.Fatalf("accepted invalid event %+v", ev)
		}
		for _, it := range ev.BrowseHistory {
			if it.ProductCode == "" || it.Quantity < 0 {
				t.Fatalf("accepted invalid item %+v", it)
			}
		}
		// A valid event's anchor is one of its products.
		if a := ev.Anchor(); len(ev.BrowseHistory) > 0 && a == "" {
			t.Fatalf("no anchor for %+v", ev)
		}
	})
}
