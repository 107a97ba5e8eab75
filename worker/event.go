package worker

import (
	"fmt"
	"math"
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
	// "browse_history[].<key>", each once, in order of appearance, at most MaxUnknownNames
	// of them. Not part of the output.
	Unknown []string `json:"-"`
	// UnknownOmitted counts the dropped fields not named in Unknown because it was full (a
	// name repeated past the cap counts each time).
	UnknownOmitted int `json:"-"`
}

// MaxUnknownNames caps Event.Unknown. A 64 KiB event can carry ~9,000 distinct keys; listing
// them all (each checked against the list) would cost ~40 M string comparisons for one
// event. Names beyond the cap are only counted: the unknown_fields_total metric gives its own
// series to 32 names in all anyway (maxUnknownFieldLabels).
const MaxUnknownNames = 64

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
