package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

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
			ev.addUnknown(jsonString(key))
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
		bi, err := decodeItem(it, n, lim.RejectUnknown, &ev)
		if err != nil {
			return ev, err
		}
		ev.BrowseHistory = append(ev.BrowseHistory, bi)
	}
	return ev, nil
}

// Known top-level fields, indexes into Decode's slots and eventFieldNames.
//
// Adding a field to the event touches, in this order: the Event struct (event.go), these
// constants and eventFieldNames, its validation step in Decode, decodeReference (the fuzz
// oracle, event_ref_test.go), OutputRecord and the processor's copy into it (record.go,
// processor.go take), and the output schema in docs/worker.md. FuzzDecode fails until the first four
// agree.
const (
	fSessionID = iota
	fCustomerNumber
	fCity
	fCountry
	fCreditLimit
	fBrowseHistory
	numEventFields
)

// eventFieldNames are the JSON names of the top-level fields, by slot.
var eventFieldNames = [numEventFields]string{
	fSessionID:      "session_id",
	fCustomerNumber: "customer_number",
	fCity:           "city",
	fCountry:        "country",
	fCreditLimit:    "credit_limit",
	fBrowseHistory:  "browse_history",
}

// eventFieldIndex maps a raw key token (with quotes) to its slot, or -1.
func eventFieldIndex(key []byte) int {
	k := unquoteKey(key)
	for i, name := range eventFieldNames {
		if string(k) == name {
			return i
		}
	}
	return -1
}

// addUnknown records a dropped field's name in ev.Unknown unless it is there already. The list
// holds at most MaxUnknownNames names, so the check is bounded per key and an event of
// thousands of distinct keys costs linear time; names past the cap are counted in
// ev.UnknownOmitted.
func (ev *Event) addUnknown(name string) {
	for _, n := range ev.Unknown {
		if n == name {
			return
		}
	}
	if len(ev.Unknown) >= MaxUnknownNames {
		ev.UnknownOmitted++
		return
	}
	ev.Unknown = append(ev.Unknown, name)
}

// decodeItem validates browse_history[n]; it is a raw object or null. Unknown item fields are
// rejected, or (reject false) recorded in ev as "browse_history[].<key>".
func decodeItem(raw []byte, n int, reject bool, ev *Event) (BrowseItem, error) {
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
				ev.addUnknown("browse_history[]." + jsonString(key))
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
