// Package produce is the sales-platform simulator: it writes realistic user-activity events to
// the Kinesis stream in the format of the lab's example record, with a controllable share of
// unseen customers/cities and of malformed events.
package produce

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
)

// Customer is what an event carries about its user.
type Customer struct {
	Number      int64
	City        string
	Country     string
	CreditLimit float64
}

// Catalog is what events are drawn from: known customers and product codes.
type Catalog struct {
	Customers []Customer
	Products  []string
}

// Validate reports an unusable catalog.
func (c Catalog) Validate() error {
	if len(c.Customers) == 0 {
		return errors.New("catalog has no customers")
	}
	if len(c.Products) == 0 {
		return errors.New("catalog has no products")
	}
	return nil
}

// BadKind is the kind of a deliberately malformed event, named after the rejection reason the
// worker's decoder gives it (worker.Reason values).
type BadKind string

// Malformed event kinds the generator mixes in with --bad-ratio.
const (
	BadJSON      BadKind = "bad_json"      // truncated JSON
	MissingField BadKind = "missing_field" // no customer_number
	InvalidField BadKind = "invalid_field" // credit_limit is a word
	UnknownField BadKind = "unknown_field" // a field outside the schema
)

// BadKinds lists every kind, in the order the generator cycles through them.
var BadKinds = []BadKind{BadJSON, MissingField, InvalidField, UnknownField}

// unseenCities are real cities absent from classicmodels' customers, so the model has never
// seen them (the lab's real example: customer 478 in Pasadena).
var unseenCities = []struct{ city, country string }{
	{"Pasadena", "USA"}, {"Austin", "USA"}, {"Porto", "Portugal"}, {"Kraków", "Poland"},
	{"Osaka", "Japan"}, {"Valencia", "Spain"}, {"Leeds", "UK"}, {"Gent", "Belgium"},
}

// GenConfig controls the generator.
type GenConfig struct {
	Seed        uint64
	BadRatio    float64 // share of malformed events, 0..1
	UnseenRatio float64 // share of events from customers (and cities) the model has not seen
}

// Validate reports the first invalid field.
func (c GenConfig) Validate() error {
	if c.BadRatio < 0 || c.BadRatio > 1 {
		return fmt.Errorf("bad-ratio: must be between 0 and 1, got %g", c.BadRatio)
	}
	if c.UnseenRatio < 0 || c.UnseenRatio > 1 {
		return fmt.Errorf("unseen-ratio: must be between 0 and 1, got %g", c.UnseenRatio)
	}
	return nil
}

// Generator makes events. It is deterministic for a seed and not safe for concurrent use.
type Generator struct {
	cfg     GenConfig
	cat     Catalog
	rng     *rand.Rand
	maxCust int64
	badN    int
}

// Event is one generated record.
type Event struct {
	Data         []byte
	PartitionKey string
	Bad          BadKind // "" for a well-formed event
}

// wire is the JSON shape of an event (example_record.json). Quantity is any: a number, or a
// numeric string as in the real delivered record.
type wire struct {
	SessionID      string     `json:"session_id"`
	CustomerNumber int64      `json:"customer_number"`
	City           string     `json:"city"`
	Country        string     `json:"country"`
	CreditLimit    int64      `json:"credit_limit"`
	BrowseHistory  []wireItem `json:"browse_history"`
}

type wireItem struct {
	ProductCode    string `json:"product_code"`
	Quantity       any    `json:"quantity"`
	InShoppingCart bool   `json:"in_shopping_cart"`
}

// NewGenerator validates its inputs; it does no I/O.
func NewGenerator(cfg GenConfig, cat Catalog) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cat.Validate(); err != nil {
		return nil, err
	}
	g := &Generator{cfg: cfg, cat: cat, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	for _, c := range cat.Customers {
		g.maxCust = max(g.maxCust, c.Number)
	}
	return g, nil
}

// Next returns the next event.
func (g *Generator) Next() Event {
	w := g.wellFormed()
	key := w.SessionID
	if g.cfg.BadRatio > 0 && g.rng.Float64() < g.cfg.BadRatio {
		kind := BadKinds[g.badN%len(BadKinds)]
		g.badN++
		return Event{Data: malformed(kind, w), PartitionKey: key, Bad: kind}
	}
	b, _ := json.Marshal(w) // wire has only marshalable fields
	return Event{Data: b, PartitionKey: key}
}

func (g *Generator) wellFormed() wire {
	var w wire
	w.SessionID = g.uuid()
	if g.rng.Float64() < g.cfg.UnseenRatio {
		uc := unseenCities[g.rng.IntN(len(unseenCities))]
		w.CustomerNumber = g.maxCust + 1 + g.rng.Int64N(10000)
		w.City, w.Country = uc.city, uc.country
		w.CreditLimit = 10000 + g.rng.Int64N(140000)
	} else {
		c := g.cat.Customers[g.rng.IntN(len(g.cat.Customers))]
		w.CustomerNumber, w.City, w.Country = c.Number, c.City, c.Country
		w.CreditLimit = int64(c.CreditLimit)
	}
	n := 1 + g.rng.IntN(10)
	w.BrowseHistory = make([]wireItem, n)
	for i := range w.BrowseHistory {
		var q any = int64(1 + g.rng.IntN(5))
		if g.rng.IntN(3) == 0 {
			q = strconv.FormatInt(q.(int64), 10) // as in the real delivered record
		}
		w.BrowseHistory[i] = wireItem{
			ProductCode:    g.cat.Products[g.rng.IntN(len(g.cat.Products))],
			Quantity:       q,
			InShoppingCart: g.rng.IntN(3) == 0,
		}
	}
	return w
}

func (g *Generator) uuid() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(g.rng.Uint32())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// malformed turns a well-formed event into one of the given kind.
func malformed(kind BadKind, w wire) []byte {
	good, _ := json.Marshal(w)
	var m map[string]any
	_ = json.Unmarshal(good, &m)
	switch kind {
	case BadJSON:
		return good[:len(good)/2]
	case MissingField:
		delete(m, "customer_number")
	case InvalidField:
		m["credit_limit"] = "plenty"
	case UnknownField:
		m["coupon_code"] = "SAVE10"
	}
	b, _ := json.Marshal(m)
	return b
}
