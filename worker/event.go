package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Event is one user-activity event as the sales platform writes it to the stream. Decode
// produces it; every field is validated.
type Event struct {
	SessionID      string       `json:"session_id"`
	CustomerNumber int64        `json:"customer_number"`
	City           string       `json:"city"`
	Country        string       `json:"country"`
	CreditLimit    float64      `json:"credit_limit"`
	BrowseHistory  []BrowseItem `json:"browse_history"`

	// Unknown names the fields Decode dropped because the schema does not have them (only
	// when Limits.RejectUnknown is false): top-level keys as sent, item keys as
	// "browse_history[].<key>", each once, in order of appearance. Not part of the output.
	Unknown []string `json:"-"`
}

// Value ranges Decode enforces, so that every event it accepts can be encoded by the model
// (whose inputs are float32) and stored in the schema (customerNumber is an INT column).
// They cover real shops with room to spare: classicmodels' largest credit limit is 227,600.
const (
	MaxCustomerNumber = math.MaxInt32 // customers.customerNumber INT
	MaxCreditLimit    = 1e12          // currency units
	MaxQuantity       = 1_000_000     // items of one product in one browse entry
)

// BrowseItem is one entry of an event's browse history. Quantity arrives as a JSON number or a
// numeric string and is normalised to an integer.
type BrowseItem struct {
	ProductCode    string `parquet:"product_code" json:"product_code"`
	Quantity       int64  `parquet:"quantity" json:"quantity"`
	InShoppingCart bool   `parquet:"in_shopping_cart" json:"in_shopping_cart"`
}

// Anchor returns the product code whose similar items the event gets: the most recent item in
// the shopping cart, else the most recent item browsed, where "most recent" is the last one in
// browse_history (the platform appends). It is "" for an empty history. Deterministic, so a
// replay produces identical output (the lab picked at random).
func (e *Event) Anchor() string {
	for i := len(e.BrowseHistory) - 1; i >= 0; i-- {
		if e.BrowseHistory[i].InShoppingCart {
			return e.BrowseHistory[i].ProductCode
		}
	}
	if n := len(e.BrowseHistory); n > 0 {
		return e.BrowseHistory[n-1].ProductCode
	}
	return ""
}

// Reason classifies why an event was rejected. It is written to errors/ objects and used as a
// metric label, so the values are part of the interface.
type Reason string

// Rejection reasons.
const (
	ReasonTooLarge       Reason = "too_large"        // record larger than worker.max_event_bytes
	ReasonBadJSON        Reason = "bad_json"         // not one JSON object
	ReasonMissingField   Reason = "missing_field"    // a required field is absent or null
	ReasonInvalidField   Reason = "invalid_field"    // a field has the wrong type or value
	ReasonUnknownField   Reason = "unknown_field"    // a field the schema does not have
	ReasonHistoryTooLong Reason = "history_too_long" // browse_history longer than worker.max_browse_history
	// ReasonRecommendFailed: the event decoded, but the recommender cannot process it (its
	// error is deterministic for this record: see failure.go); the message holds the error.
	ReasonRecommendFailed Reason = "recommend_failed"
)

// DecodeError is returned by Decode for an event that cannot be processed. Field names the
// offending JSON path ("browse_history[2].quantity") when there is one.
type DecodeError struct {
	Reason Reason
	Field  string
	Msg    string
}

func (e *DecodeError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", e.Reason, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Reason, e.Msg)
}

// Limits bounds what Decode accepts.
type Limits struct {
	MaxBytes         int // whole record
	MaxBrowseHistory int // browse_history entries
	// RejectUnknown rejects an event carrying a field the schema does not have
	// (worker.unknown_fields: reject). false (the default, "ignore") drops the field, names it
	// in Event.Unknown and processes the event: a producer adding a field is schema evolution.
	RejectUnknown bool
}

// maxStringLen bounds every string field; generous for ids, cities and product codes.
const maxStringLen = 256

// Decode parses and validates one raw record. Any failure is a *DecodeError; Decode never panics
// on input. Unknown fields are dropped and named in Event.Unknown, or rejected with
// lim.RejectUnknown. Every numeric field is finite and within its range (MaxCustomerNumber,
// MaxCreditLimit, MaxQuantity) and no string holds a NUL character (PostgreSQL text cannot),
// so that whatever Decode accepts can be encoded by the model and queried.
//
// Checks run in this order, and the first failure is returned: size; well-formed JSON object
// (bad_json); no unknown top-level field (when rejected); session_id, city, country,
// customer_number, credit_limit; browse_history present and an array of objects, not too
// long; then each item in turn (unknown field, product_code, quantity, in_shopping_cart). A
// duplicated key counts once, with its last value (as encoding/json does).
//
// It is a single pass over the bytes after encoding/json's validity scan (the hot path of the
// worker: a map-based decode cost five times as much); strings with escapes or non-ASCII bytes
// and every error message on malformed JSON still come from encoding/json, so values and
// reasons are those of a plain json.Unmarshal (pinned by a differential fuzz test).
func Decode(data []byte, lim Limits) (Event, error) {
	var ev Event
	if lim.MaxBytes > 0 && len(data) > lim.MaxBytes {
		return ev, &DecodeError{Reason: ReasonTooLarge, Msg: fmt.Sprintf("%d bytes, limit %d", len(data), lim.MaxBytes)}
	}
	if !json.Valid(data) {
		return ev, badJSON(data)
	}
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return ev, badJSON(data)
	}
	// Top-level members: the raw value of each known field (nil when absent).
	var f [numEventFields][]byte
	var unknown []byte
	_, err := eachMember(data, i, func(key, val []byte) {
		if k := eventFieldIndex(key); k >= 0 {
			f[k] = val
			return
		}
		if unknown == nil {
			unknown = key
		}
		if !lim.RejectUnknown {
			ev.Unknown = appendUnique(ev.Unknown, jsonString(key))
		}
	})
	if err != nil {
		return ev, err
	}
	if unknown != nil && lim.RejectUnknown {
		return ev, &DecodeError{Reason: ReasonUnknownField, Field: jsonString(unknown), Msg: "not part of the event schema"}
	}
	if ev.SessionID, err = stringValue(f[fSessionID], "session_id", false); err != nil {
		return ev, err
	}
	if ev.City, err = stringValue(f[fCity], "city", true); err != nil {
		return ev, err
	}
	if ev.Country, err = stringValue(f[fCountry], "country", true); err != nil {
		return ev, err
	}
	if ev.CustomerNumber, err = intValue(f[fCustomerNumber], "customer_number", false); err != nil {
		return ev, err
	}
	if ev.CustomerNumber < 0 || ev.CustomerNumber > MaxCustomerNumber {
		return ev, &DecodeError{Reason: ReasonInvalidField, Field: "customer_number", Msg: fmt.Sprintf("must be between 0 and %d", MaxCustomerNumber)}
	}
	if ev.CreditLimit, err = numberValue(f[fCreditLimit], "credit_limit"); err != nil {
		return ev, err
	}
	if ev.CreditLimit < 0 || ev.CreditLimit > MaxCreditLimit {
		return ev, &DecodeError{Reason: ReasonInvalidField, Field: "credit_limit", Msg: fmt.Sprintf("must be between 0 and %g", float64(MaxCreditLimit))}
	}
	if ev.CreditLimit == 0 {
		ev.CreditLimit = 0 // -0 is stored as 0: readers comparing values see one zero
	}
	hist := f[fBrowseHistory]
	if hist == nil || isNullValue(hist) {
		return ev, &DecodeError{Reason: ReasonMissingField, Field: "browse_history", Msg: "required"}
	}
	// First the whole array's shape (objects or nulls), then its length, then each item.
	var itemsBuf [16][]byte // typical histories need no allocation for the split
	items, ok := arrayOfObjects(hist, itemsBuf[:0])
	if !ok {
		return ev, &DecodeError{Reason: ReasonInvalidField, Field: "browse_history", Msg: "must be an array of objects"}
	}
	if lim.MaxBrowseHistory > 0 && len(items) > lim.MaxBrowseHistory {
		return ev, &DecodeError{Reason: ReasonHistoryTooLong, Field: "browse_history", Msg: fmt.Sprintf("%d items, limit %d", len(items), lim.MaxBrowseHistory)}
	}
	ev.BrowseHistory = make([]BrowseItem, 0, len(items))
	for n, it := range items {
		bi, err := decodeItem(it, n, lim.RejectUnknown, &ev.Unknown)
		if err != nil {
			return ev, err
		}
		ev.BrowseHistory = append(ev.BrowseHistory, bi)
	}
	return ev, nil
}

// Known top-level fields, indexes into Decode's slots.
const (
	fSessionID = iota
	fCustomerNumber
	fCity
	fCountry
	fCreditLimit
	fBrowseHistory
	numEventFields
)

// eventFieldIndex maps a raw key token (with quotes) to its slot, or -1.
func eventFieldIndex(key []byte) int {
	switch string(unquoteKey(key)) {
	case "session_id":
		return fSessionID
	case "customer_number":
		return fCustomerNumber
	case "city":
		return fCity
	case "country":
		return fCountry
	case "credit_limit":
		return fCreditLimit
	case "browse_history":
		return fBrowseHistory
	}
	return -1
}

// appendUnique appends name to names unless it is there already (names are few).
func appendUnique(names []string, name string) []string {
	for _, n := range names {
		if n == name {
			return names
		}
	}
	return append(names, name)
}

// decodeItem validates browse_history[n]; it is a raw object or null. Unknown item fields are
// rejected, or (reject false) appended to *dropped as "browse_history[].<key>".
func decodeItem(raw []byte, n int, reject bool, dropped *[]string) (BrowseItem, error) {
	var bi BrowseItem
	path := func(field string) string { return fmt.Sprintf("browse_history[%d]%s", n, field) }
	if isNullValue(raw) {
		return bi, &DecodeError{Reason: ReasonInvalidField, Field: path(""), Msg: "must be an object"}
	}
	var code, qty, cart, unknown []byte
	if _, err := eachMember(raw, 0, func(key, val []byte) {
		switch string(unquoteKey(key)) {
		case "product_code":
			code = val
		case "quantity":
			qty = val
		case "in_shopping_cart":
			cart = val
		default:
			if unknown == nil {
				unknown = key
			}
			if !reject {
				*dropped = appendUnique(*dropped, "browse_history[]."+jsonString(key))
			}
		}
	}); err != nil {
		return bi, err
	}
	if unknown != nil && reject {
		return bi, &DecodeError{Reason: ReasonUnknownField, Field: path("." + jsonString(unknown)), Msg: "not part of the event schema"}
	}
	var err error
	if bi.ProductCode, err = stringValue(code, "", false); err != nil {
		return bi, withField(err, path(".product_code"))
	}
	if bi.Quantity, err = intValue(qty, "", true); err != nil {
		return bi, withField(err, path(".quantity"))
	}
	if bi.Quantity < 0 || bi.Quantity > MaxQuantity {
		return bi, &DecodeError{Reason: ReasonInvalidField, Field: path(".quantity"), Msg: fmt.Sprintf("must be between 0 and %d", MaxQuantity)}
	}
	switch {
	case cart == nil || isNullValue(cart):
		return bi, &DecodeError{Reason: ReasonMissingField, Field: path(".in_shopping_cart"), Msg: "required"}
	case string(cart) == "true":
		bi.InShoppingCart = true
	case string(cart) == "false":
	default:
		return bi, &DecodeError{Reason: ReasonInvalidField, Field: path(".in_shopping_cart"), Msg: "must be true or false"}
	}
	return bi, nil
}

// withField names the field of a DecodeError built without it (item paths are formatted only
// on failure: they cost an allocation per item).
func withField(err error, field string) error {
	var de *DecodeError
	if errors.As(err, &de) {
		de.Field = field
	}
	return err
}

// badJSON explains why data is not one JSON object, in encoding/json's words.
//
// Unmarshalling into a json.RawMessage runs only encoding/json's syntax scan (no value is
// built), so a producer sending garbage costs one extra scan per record, not a decode.
func badJSON(data []byte) error {
	var raw json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return &DecodeError{Reason: ReasonBadJSON, Msg: err.Error()}
	}
	return &DecodeError{Reason: ReasonBadJSON, Msg: "not a JSON object"}
}

// The scanner below runs only on input json.Valid accepted, so it need not diagnose syntax;
// it still bounds-checks every index and reports a bad_json error rather than panic if its
// assumptions ever fail.

var errScan = &DecodeError{Reason: ReasonBadJSON, Msg: "malformed JSON"}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just after the value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errScan
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				j, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = j
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, errScan
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		if j == i {
			return 0, errScan
		}
		return j, nil
	}
}

// skipString returns the index just after the string starting at b[i] (a quote).
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errScan
}

// eachMember calls fn with each member's raw key token (quoted) and raw value of the object
// starting at b[i], and returns the index after it.
func eachMember(b []byte, i int, fn func(key, val []byte)) (int, error) {
	if i >= len(b) || b[i] != '{' {
		return 0, errScan
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		k, err := skipString(b, i)
		if err != nil || b[i] != '"' {
			return 0, errScan
		}
		key := b[i:k]
		i = skipSpace(b, k)
		if i >= len(b) || b[i] != ':' {
			return 0, errScan
		}
		i = skipSpace(b, i+1)
		j, err := skipValue(b, i)
		if err != nil {
			return 0, err
		}
		fn(key, b[i:j])
		i = skipSpace(b, j)
		if i >= len(b) {
			return 0, errScan
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, errScan
		}
	}
}

// arrayOfObjects appends to items the elements of a raw array whose elements are all objects
// or null; ok is false for anything else (encoding/json would refuse it as
// []map[string]json.RawMessage).
func arrayOfObjects(b []byte, items [][]byte) (_ [][]byte, ok bool) {
	if len(b) == 0 || b[0] != '[' {
		return nil, false
	}
	i := skipSpace(b, 1)
	if i < len(b) && b[i] == ']' {
		return items, true
	}
	for i < len(b) {
		if b[i] != '{' && !bytes.HasPrefix(b[i:], []byte("null")) {
			return nil, false
		}
		j, err := skipValue(b, i)
		if err != nil {
			return nil, false
		}
		items = append(items, b[i:j])
		i = skipSpace(b, j)
		if i >= len(b) {
			return nil, false
		}
		if b[i] == ']' {
			return items, true
		}
		if b[i] != ',' {
			return nil, false
		}
		i = skipSpace(b, i+1)
	}
	return nil, false
}

func isNullValue(v []byte) bool { return string(v) == "null" }

// plainString reports whether a raw string token needs no unescaping or UTF-8 repair.
func plainString(tok []byte) bool {
	for _, c := range tok[1 : len(tok)-1] {
		if c == '\\' || c >= 0x80 || c < 0x20 {
			return false
		}
	}
	return true
}

// unquoteKey returns a key token's text cheaply for the common case (no escapes, ASCII);
// other keys are decoded by encoding/json.
func unquoteKey(tok []byte) []byte {
	if len(tok) >= 2 && plainString(tok) {
		return tok[1 : len(tok)-1]
	}
	return []byte(jsonString(tok))
}

// jsonString decodes a raw string token as encoding/json does (escapes, invalid UTF-8 → U+FFFD).
func jsonString(tok []byte) string {
	if len(tok) >= 2 && plainString(tok) {
		return string(tok[1 : len(tok)-1])
	}
	var s string
	if err := json.Unmarshal(tok, &s); err != nil {
		return string(tok)
	}
	return s
}

func isQuotedValue(v []byte) bool { return len(v) > 0 && v[0] == '"' }

// stringValue reads a required string; allowEmpty permits "" (a city may be unknown).
func stringValue(v []byte, path string, allowEmpty bool) (string, error) {
	if v == nil || isNullValue(v) {
		return "", &DecodeError{Reason: ReasonMissingField, Field: path, Msg: "required"}
	}
	if !isQuotedValue(v) {
		return "", &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be a string"}
	}
	s := jsonString(v)
	if !allowEmpty && strings.TrimSpace(s) == "" {
		return "", &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must not be empty"}
	}
	if len(s) > maxStringLen {
		return "", &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: fmt.Sprintf("longer than %d bytes", maxStringLen)}
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "", &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must not contain NUL characters"}
	}
	return s, nil
}

// isNumberValue reports whether a raw value is a JSON number literal.
func isNumberValue(v []byte) bool { return len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9') }

// numberValue reads a required finite JSON number.
func numberValue(v []byte, path string) (float64, error) {
	if v == nil || isNullValue(v) {
		return 0, &DecodeError{Reason: ReasonMissingField, Field: path, Msg: "required"}
	}
	if !isNumberValue(v) {
		return 0, &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be a number"}
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be a finite number"}
	}
	return f, nil
}

// intValue reads a required integer; allowString also accepts a numeric string ("7").
func intValue(v []byte, path string, allowString bool) (int64, error) {
	if v == nil || isNullValue(v) {
		return 0, &DecodeError{Reason: ReasonMissingField, Field: path, Msg: "required"}
	}
	var text string
	switch {
	case isQuotedValue(v):
		if !allowString {
			return 0, &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be an integer"}
		}
		text = strings.TrimSpace(jsonString(v))
	case isNumberValue(v):
		text = string(v)
	default:
		return 0, &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be an integer"}
	}
	if i, err := strconv.ParseInt(text, 10, 64); err == nil {
		return i, nil
	}
	// 2.0 or "1e2" are integers written as floats; 1.5 is not.
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be an integer"}
	}
	return int64(f), nil
}
