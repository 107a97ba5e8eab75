package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// decodeReference is the original map-based decoder, kept as the oracle of the differential
// fuzz test: Decode must reject exactly what it rejects, with the same reason and field.
// (Decode parses and validates one raw record.) Any failure is a *DecodeError; Decode never panics
// on input. Unknown fields are rejected so that a producer-side schema change is noticed in
// errors/ rather than silently dropped from the output.
func decodeReference(data []byte, lim Limits) (Event, error) {
	var ev Event
	if lim.MaxBytes > 0 && len(data) > lim.MaxBytes {
		return ev, &DecodeError{Reason: ReasonTooLarge, Msg: fmt.Sprintf("%d bytes, limit %d", len(data), lim.MaxBytes)}
	}
	var raw map[string]json.RawMessage
	if err := refStrictUnmarshal(data, &raw); err != nil {
		return ev, &DecodeError{Reason: ReasonBadJSON, Msg: err.Error()}
	}
	if raw == nil {
		return ev, &DecodeError{Reason: ReasonBadJSON, Msg: "not a JSON object"}
	}
	known := map[string]bool{"session_id": true, "customer_number": true, "city": true, "country": true, "credit_limit": true, "browse_history": true}
	for k := range raw {
		if !known[k] {
			if lim.RejectUnknown {
				return ev, &DecodeError{Reason: ReasonUnknownField, Field: k, Msg: "not part of the event schema"}
			}
			ev.Unknown = append(ev.Unknown, k)
		}
	}
	var err error
	if ev.SessionID, err = refStringField(raw, "session_id", "session_id", false); err != nil {
		return ev, err
	}
	if ev.City, err = refStringField(raw, "city", "city", true); err != nil {
		return ev, err
	}
	if ev.Country, err = refStringField(raw, "country", "country", true); err != nil {
		return ev, err
	}
	if ev.CustomerNumber, err = refIntField(raw["customer_number"], "customer_number", false); err != nil {
		return ev, err
	}
	if ev.CreditLimit, err = refNumberField(raw["credit_limit"], "credit_limit"); err != nil {
		return ev, err
	}
	if ev.CustomerNumber < 0 || ev.CustomerNumber > math.MaxInt32 {
		return ev, &DecodeError{Reason: ReasonInvalidField, Field: "customer_number", Msg: "out of range"}
	}
	if ev.CreditLimit < 0 || ev.CreditLimit > 1e12 {
		return ev, &DecodeError{Reason: ReasonInvalidField, Field: "credit_limit", Msg: "out of range"}
	}
	if ev.CreditLimit == 0 {
		ev.CreditLimit = 0 // not -0
	}
	hist, ok := raw["browse_history"]
	if !ok || refIsNull(hist) {
		return ev, &DecodeError{Reason: ReasonMissingField, Field: "browse_history", Msg: "required"}
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(hist, &items); err != nil {
		return ev, &DecodeError{Reason: ReasonInvalidField, Field: "browse_history", Msg: "must be an array of objects"}
	}
	if lim.MaxBrowseHistory > 0 && len(items) > lim.MaxBrowseHistory {
		return ev, &DecodeError{Reason: ReasonHistoryTooLong, Field: "browse_history", Msg: fmt.Sprintf("%d items, limit %d", len(items), lim.MaxBrowseHistory)}
	}
	ev.BrowseHistory = make([]BrowseItem, 0, len(items))
	for i, it := range items {
		p := fmt.Sprintf("browse_history[%d]", i)
		if it == nil {
			return ev, &DecodeError{Reason: ReasonInvalidField, Field: p, Msg: "must be an object"}
		}
		for k := range it {
			switch k {
			case "product_code", "quantity", "in_shopping_cart":
			default:
				if lim.RejectUnknown {
					return ev, &DecodeError{Reason: ReasonUnknownField, Field: p + "." + k, Msg: "not part of the event schema"}
				}
				if !slices.Contains(ev.Unknown, "browse_history[]."+k) {
					ev.Unknown = append(ev.Unknown, "browse_history[]."+k)
				}
			}
		}
		var bi BrowseItem
		if bi.ProductCode, err = refStringField(it, "product_code", p+".product_code", false); err != nil {
			return ev, err
		}
		if bi.Quantity, err = refIntField(it["quantity"], p+".quantity", true); err != nil {
			return ev, err
		}
		if bi.Quantity < 0 || bi.Quantity > 1_000_000 {
			return ev, &DecodeError{Reason: ReasonInvalidField, Field: p + ".quantity", Msg: "must be >= 0"}
		}
		cart, ok := it["in_shopping_cart"]
		if !ok || refIsNull(cart) {
			return ev, &DecodeError{Reason: ReasonMissingField, Field: p + ".in_shopping_cart", Msg: "required"}
		}
		if err := json.Unmarshal(cart, &bi.InShoppingCart); err != nil {
			return ev, &DecodeError{Reason: ReasonInvalidField, Field: p + ".in_shopping_cart", Msg: "must be true or false"}
		}
		ev.BrowseHistory = append(ev.BrowseHistory, bi)
	}
	return ev, nil
}

// strictUnmarshal decodes exactly one JSON value, rejecting trailing data.
func refStrictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func refIsNull(m json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(m), []byte("null")) }

// stringField reads a required string; allowEmpty permits "" (a city may be unknown).
func refStringField(obj map[string]json.RawMessage, key, path string, allowEmpty bool) (string, error) {
	v, ok := obj[key]
	if !ok || refIsNull(v) {
		return "", &DecodeError{Reason: ReasonMissingField, Field: path, Msg: "required"}
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be a string"}
	}
	if !allowEmpty && strings.TrimSpace(s) == "" {
		return "", &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must not be empty"}
	}
	if len(s) > maxStringLen {
		return "", &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: fmt.Sprintf("longer than %d bytes", maxStringLen)}
	}
	if strings.ContainsRune(s, 0) {
		return "", &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "contains NUL"}
	}
	return s, nil
}

// numberField reads a required finite JSON number.
func refNumberField(v json.RawMessage, path string) (float64, error) {
	if v == nil || refIsNull(v) {
		return 0, &DecodeError{Reason: ReasonMissingField, Field: path, Msg: "required"}
	}
	var n json.Number
	if refIsQuoted(v) || json.Unmarshal(v, &n) != nil {
		return 0, &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be a number"}
	}
	f, err := n.Float64()
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be a finite number"}
	}
	return f, nil
}

func refIsQuoted(v json.RawMessage) bool {
	t := bytes.TrimSpace(v)
	return len(t) > 0 && t[0] == '"'
}

// intField reads a required integer; allowString also accepts a numeric string ("7").
func refIntField(v json.RawMessage, path string, allowString bool) (int64, error) {
	if v == nil || refIsNull(v) {
		return 0, &DecodeError{Reason: ReasonMissingField, Field: path, Msg: "required"}
	}
	var text string
	if refIsQuoted(v) {
		if !allowString {
			return 0, &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be an integer"}
		}
		if err := json.Unmarshal(v, &text); err != nil {
			return 0, &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be an integer or a numeric string"}
		}
		text = strings.TrimSpace(text)
	} else {
		var n json.Number
		if err := json.Unmarshal(v, &n); err != nil {
			return 0, &DecodeError{Reason: ReasonInvalidField, Field: path, Msg: "must be an integer"}
		}
		text = n.String()
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
