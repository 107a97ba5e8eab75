package seed

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"github.com/recstream/recstream/batch/dataset"
)

// Generated data shapes. Nullable columns are pointers; amounts are DECIMAL(10,2) in hundredths.

// Customer is one generated customers row.
type Customer struct {
	Number           int
	Name             string
	ContactLastName  string
	ContactFirstName string
	Phone            string
	AddressLine1     string
	AddressLine2     *string
	City             string
	State            *string
	PostalCode       *string
	Country          string
	SalesRep         *int
	CreditLimitCents int64
}

// Product is one generated products row.
type Product struct {
	Code            string
	Name            string
	Line            string
	Scale           string
	Vendor          string
	Description     string
	QuantityInStock int
	BuyPriceCents   int64
	MSRPCents       int64
}

// Rating is one ratings row.
type Rating struct {
	CustomerNumber int
	ProductCode    string
	Rating         int
}

// Order is one orders row with its orderdetails lines and the payment that settled it.
type Order struct {
	Number         int
	CustomerNumber int
	OrderDate      time.Time
	RequiredDate   time.Time
	ShippedDate    *time.Time
	Status         string
	Comments       *string
	Lines          []OrderLine
	CheckNumber    string // payments.checkNumber of this order's payment
}

// OrderLine is one orderdetails row.
type OrderLine struct {
	ProductCode     string
	QuantityOrdered int
	PriceEachCents  int64
	LineNumber      int
}

// CustomerData is everything generated for one customer: the row, its ratings (one per bought
// product) and its orders.
type CustomerData struct {
	Customer Customer
	Ratings  []Rating
	Orders   []Order
}

// ratingWeights is the real distribution of ratings (percent for 1..5).
var ratingWeights = []int{9, 22, 34, 25, 10}

// The latent rating model. Customer c rates bought product p by a latent score
//
//	s = country[c.Country] + CreditSlope·(credit − CreditCentre)/CreditScale      user effect
//	  + taste[c.Country][p.Line] + ScaleSlope·(credit − CreditCentre)/CreditScale·size[p.Scale]   affinity
//	  + ε,  ε ~ N(0, NoiseSD²)                                                      noise
//
// where country effects ~ N(0, CountrySD²) and each country's taste for each product line
// ~ N(0, TasteSD²) are drawn from the seed (the countries in sorted order), credit is the credit
// limit in dollars, and size grows with the model's size (1:10 largest, 1:700 smallest):
// customers with a higher credit limit rate higher and prefer larger scales. The score becomes
// a rating through four thresholds, the quantiles of s at 9, 31, 65 and 90 % over a fixed
// reference sample (thresholdSample pairs of generated customers and products), so the ratings
// keep the real distribution 1: 9 %, 2: 22 %, 3: 34 %, 4: 25 %, 5: 10 %. Bought products are
// chosen uniformly, independently of the score.
const (
	CountrySD    = 0.45
	CreditSlope  = 0.45
	CreditCentre = 100_000
	CreditScale  = 70_000
	TasteSD      = 0.4
	ScaleSlope   = 0.3
	NoiseSD      = 0.6
	// thresholdSample is the size of the reference sample the thresholds are read from.
	thresholdSample = 40_000
)

// scaleSize is the size score of each product scale (larger models score higher).
var scaleSize = map[string]float64{"1:10": 1.5, "1:12": 1.2, "1:18": 0.8, "1:24": 0.3, "1:32": -0.2, "1:50": -0.6, "1:72": -1.0, "1:700": -1.5}

// ratingModel holds the latent model's seeded parts.
type ratingModel struct {
	country    map[string]float64
	taste      map[string][]float64 // per country, indexed like productLines
	thresholds [4]float64
}

// latent is the score s of customer c for product p without the noise.
func (m *ratingModel) latent(c *Customer, p *Product) float64 {
	z := (float64(c.CreditLimitCents)/100 - CreditCentre) / CreditScale
	line := 0
	for k, l := range productLines {
		if l == p.Line {
			line = k
		}
	}
	return m.country[c.Country] + CreditSlope*z + m.taste[c.Country][line] + ScaleSlope*z*scaleSize[p.Scale]
}

// rating turns a score into stars.
func (m *ratingModel) rating(s float64) int {
	r := 1
	for _, t := range m.thresholds {
		if s > t {
			r++
		}
	}
	return r
}

// newRatingModel draws the country effects and tastes and reads the thresholds off the
// reference sample: customers 0..1999 and products 0..1999 of this seed (whatever the sizes).
func (g *Generator) newRatingModel() *ratingModel {
	m := &ratingModel{country: map[string]float64{}, taste: map[string][]float64{}}
	var countries []string
	for _, p := range realPlaces {
		if _, ok := m.country[p.country]; !ok {
			m.country[p.country] = 0
			countries = append(countries, p.country)
		}
	}
	sort.Strings(countries)
	r := g.rng(tagModel, 0)
	for _, c := range countries {
		m.country[c] = CountrySD * r.NormFloat64()
		t := make([]float64, len(productLines))
		for k := range t {
			t[k] = TasteSD * r.NormFloat64()
		}
		m.taste[c] = t
	}
	const ref = 2000
	custs, prods := make([]Customer, ref), make([]Product, ref)
	for k := range ref {
		custs[k], prods[k] = g.Customer(k), g.product(k)
	}
	rs := g.rng(tagModel, 1)
	sample := make([]float64, thresholdSample)
	for k := range sample {
		sample[k] = m.latent(&custs[rs.IntN(ref)], &prods[rs.IntN(ref)]) + NoiseSD*rs.NormFloat64()
	}
	sort.Float64s(sample)
	cum := 0
	for k := range m.thresholds {
		cum += ratingWeights[k]
		m.thresholds[k] = sample[cum*len(sample)/100]
	}
	return m
}

// productLineWeights and scaleWeights follow the real products table.
var (
	productLines       = []string{"Classic Cars", "Vintage Cars", "Motorcycles", "Planes", "Trucks and Buses", "Ships", "Trains"}
	productLineWeights = []int{38, 24, 13, 12, 11, 9, 3}
	productScales      = []string{"1:18", "1:24", "1:700", "1:12", "1:32", "1:10", "1:72", "1:50"}
	productScaleWeight = []int{42, 27, 10, 9, 8, 6, 4, 4}
)

// FirstCustomerNumber is the customerNumber of generated customer 0; customer i is
// FirstCustomerNumber+i.
const FirstCustomerNumber = 1000

// Generator deterministically produces classicmodels-shaped data of any size: the same seed and
// sizes give the same data. Every customer's data is derived from (seed, customer index) alone,
// so Customer(i) is random access and Each streams customers without holding them. A Generator
// is immutable after NewGenerator and safe for concurrent use.
type Generator struct {
	seed        uint64
	customers   int
	perCustomer int
	products    []Product
	reps        int
	model       *ratingModel
}

// NewGenerator validates the sizes and builds the (small) product catalogue: max(110,
// customers/10, 2*ratingsPerCustomer) products. Customers get ratingsPerCustomer ratings on
// average (between half and one and a half times it, in pairs that sum to twice it, so the
// total is exactly customers*ratingsPerCustomer when customers is even).
func NewGenerator(seed int64, customers, ratingsPerCustomer int) (*Generator, error) {
	if customers < 1 || customers > 100_000_000 {
		return nil, fmt.Errorf("generator: customers must be between 1 and 100000000, got %d", customers)
	}
	if ratingsPerCustomer < 1 || ratingsPerCustomer > 10_000 {
		return nil, fmt.Errorf("generator: ratings per customer must be between 1 and 10000, got %d", ratingsPerCustomer)
	}
	g := &Generator{seed: uint64(seed), customers: customers, perCustomer: ratingsPerCustomer}
	n := max(110, customers/10, 2*ratingsPerCustomer)
	g.products = make([]Product, n)
	for j := range g.products {
		g.products[j] = g.product(j)
	}
	g.reps = max(16, customers/50)
	g.model = g.newRatingModel()
	return g, nil
}

// Entity tags keep the random streams of different tables apart.
const (
	tagCustomer uint64 = iota + 1
	tagProduct
	tagRatings
	tagPair
	tagEmployee
	tagModel
)

func (g *Generator) rng(tag uint64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(g.seed^0x9e3779b97f4a7c15, tag<<56^uint64(i)))
}

func weighted(r *rand.Rand, weights []int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	x := r.IntN(total)
	for i, w := range weights {
		if x < w {
			return i
		}
		x -= w
	}
	return len(weights) - 1
}

var placeWeights = func() []int {
	w := make([]int, len(realPlaces))
	for i, p := range realPlaces {
		w[i] = p.weight
	}
	return w
}()

func ptr[T any](v T) *T { return &v }

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

var (
	nameFirst  = []string{"Atelier", "Signal", "Australian", "La Rochelle", "Baane", "Mini", "Land of", "Euro", "Volvo", "Danish", "Saveley", "Dragon", "Muscle", "Diecast", "Technics", "Handji", "Corporate", "Classic", "Royal", "Gift"}
	nameSecond = []string{"Gifts", "Collectables", "Replicas", "Models", "Toys", "Souvenirs", "Imports", "Classics", "Wholesalers", "Emporium", "Depot", "Boutique"}
	nameSuffix = []string{"", " Ltd.", " Co.", " Inc.", " GmbH", " & Co", " Corp.", " S.A."}
	lastNames  = []string{"Schmitt", "King", "Ferguson", "Labrune", "Bergulfsen", "Nelson", "Piestrzeniewicz", "Keitel", "Murphy", "Lee", "Freyre", "Young", "Brown", "Frick", "Hernandez", "Pipps", "Taylor", "Moreno", "Larsson", "Huxley"}
	firstNames = []string{"Carine", "Jean", "Peter", "Janine", "Jonas", "Susan", "Zbyszek", "Roland", "Julie", "Kwai", "Diego", "Jeff", "Kelvin", "Leslie", "Michael", "Mary", "Sue", "Maria", "Anna", "Dean"}
	streets    = []string{"Strong St.", "rue Royale", "Kilda Road", "Erling Skakkes gate", "Lyonerstr.", "Mission Street", "Hansastr.", "Smagsloget", "Fauntleroy Circus", "Avenue des Champs", "Berkeley Gardens Blvd", "Drammen", "Grenzacherweg"}
	vendors    = []string{"Min Lin Diecast", "Classic Metal Creations", "Highway 66 Mini Classics", "Red Start Diecast", "Motor City Art Classics", "Second Gear Diecast", "Autoart Studio Design", "Welly Diecast Productions", "Unimax Art Galleries", "Studio M Art Models", "Exoto Designs", "Gearbox Collectibles", "Carousel DieCast Legends"}
	makes      = map[string][]string{
		"Classic Cars":     {"Alpine Renault", "Ferrari", "Mercedes-Benz", "Chevrolet Corvette", "Porsche", "Lamborghini", "Ford Mustang", "Jaguar"},
		"Vintage Cars":     {"Ford Model T", "Bugatti", "Rolls-Royce", "Packard", "Duesenberg", "Chevrolet Fleetline", "Cadillac"},
		"Motorcycles":      {"Harley Davidson", "Moto Guzzi", "Ducati", "Honda", "Suzuki", "BMW R", "Indian"},
		"Planes":           {"Spitfire", "P-51 Mustang", "Boeing 747", "Douglas DC-3", "Corsair F4U", "Fokker Triplane"},
		"Trucks and Buses": {"Ford F-150", "Mack Truck", "Volvo Bus", "Dodge Pickup", "Peterbilt", "Diamond T"},
		"Ships":            {"HMS Bounty", "Titanic", "Mayflower", "USS Constitution", "Queen Mary", "Pirate Galleon"},
		"Trains":           {"Collectable Wooden Train", "Union Pacific", "Orient Express", "Steam Locomotive"},
	}
)

// NumCustomers is the number of generated customers.
func (g *Generator) NumCustomers() int { return g.customers }

// Products returns the product catalogue (shared; do not modify).
func (g *Generator) Products() []Product { return g.products }

// ProductLines returns the product line names (the real seven).
func (g *Generator) ProductLines() []string { return productLines }

func (g *Generator) product(j int) Product {
	r := g.rng(tagProduct, j)
	line := productLines[weighted(r, productLineWeights)]
	scale := productScales[weighted(r, productScaleWeight)]
	mk := makes[line][r.IntN(len(makes[line]))]
	year := 1900 + r.IntN(105)
	buy := int64(1591 + r.IntN(10342-1591+1))
	msrp := buy * int64(143+r.IntN(250-143+1)) / 100
	return Product{
		Code:            "S" + scale[2:] + "_" + strconv.Itoa(1000+j),
		Name:            strconv.Itoa(year) + " " + mk,
		Line:            line,
		Scale:           scale,
		Vendor:          vendors[r.IntN(len(vendors))],
		Description:     "Official " + mk + " logos and insignias, detailed engine, opening doors and working steering; diecast metal with plastic parts.",
		QuantityInStock: 15 + r.IntN(9997-15+1),
		BuyPriceCents:   buy,
		MSRPCents:       msrp,
	}
}

// CustomerNumber returns the customerNumber of customer i.
func CustomerNumber(i int) int { return FirstCustomerNumber + i }

// Customer returns customer i (0 <= i < NumCustomers) without generating the others.
func (g *Generator) Customer(i int) Customer {
	r := g.rng(tagCustomer, i)
	p := realPlaces[weighted(r, placeWeights)]
	c := Customer{
		Number:           CustomerNumber(i),
		Name:             nameFirst[r.IntN(len(nameFirst))] + " " + nameSecond[r.IntN(len(nameSecond))] + nameSuffix[r.IntN(len(nameSuffix))],
		ContactLastName:  lastNames[r.IntN(len(lastNames))],
		ContactFirstName: firstNames[r.IntN(len(firstNames))],
		Phone:            fmt.Sprintf("%03d %03d %04d", 100+r.IntN(900), r.IntN(1000), r.IntN(10000)),
		AddressLine1:     strconv.Itoa(1+r.IntN(9999)) + " " + streets[r.IntN(len(streets))],
		City:             p.city,
		State:            optional(p.state),
		PostalCode:       optional(p.postalCode),
		Country:          p.country,
	}
	if r.IntN(100) < 18 {
		c.AddressLine2 = ptr("Level " + strconv.Itoa(1+r.IntN(20)))
	}
	if r.IntN(122) >= 22 {
		c.SalesRep = ptr(2000 + r.IntN(g.reps))
	}
	if r.IntN(122) >= 24 { // 24 of the 122 real customers have a 0.00 credit limit
		c.CreditLimitCents = int64(200+r.IntN(2100)) * 100 * 100
	}
	return c
}

// RatingCount returns how many products customer i bought (and so rated).
func (g *Generator) RatingCount(i int) int {
	n := g.perCustomer
	if !(g.customers%2 == 1 && i == g.customers-1) {
		d := g.rng(tagPair, i/2).IntN(n/2 + 1)
		if i%2 == 0 {
			n += d
		} else {
			n -= d
		}
	}
	return min(max(n, 1), len(g.products))
}

// CustomerData returns customer i with its ratings, sorted by productCode. Orders are left
// empty: their numbers depend on earlier customers, so only Each generates them.
func (g *Generator) CustomerData(i int) CustomerData {
	c := g.Customer(i)
	r := g.rng(tagRatings, i)
	k := g.RatingCount(i)
	picked := make(map[int]struct{}, k)
	idx := make([]int, 0, k)
	for len(idx) < k {
		j := r.IntN(len(g.products))
		if _, dup := picked[j]; dup {
			continue
		}
		picked[j] = struct{}{}
		idx = append(idx, j)
	}
	sort.Slice(idx, func(a, b int) bool { return g.products[idx[a]].Code < g.products[idx[b]].Code })
	ratings := make([]Rating, k)
	for n, j := range idx {
		s := g.model.latent(&c, &g.products[j]) + NoiseSD*r.NormFloat64()
		ratings[n] = Rating{CustomerNumber: c.Number, ProductCode: g.products[j].Code, Rating: g.model.rating(s)}
	}
	return CustomerData{Customer: c, Ratings: ratings}
}

var (
	orderEpoch   = time.Date(2003, 1, 6, 0, 0, 0, 0, time.UTC)
	orderSpan    = 875 // days: 2003-01-06 .. 2005-05-31 like the real orders
	orderStatus  = []string{"Shipped", "Shipped", "Shipped", "Shipped", "Shipped", "Shipped", "Shipped", "Shipped", "Resolved", "Cancelled", "On Hold", "Disputed", "In Process"}
	orderComment = []string{"Check on availability.", "Customer requested that FedEx Ground is used for this shipping", "Difficult to negotiate with customer. We need more marketing materials"}
)

// FirstOrderNumber is the orderNumber of the first generated order.
const FirstOrderNumber = 10100

// Each calls fn for every customer in order with its ratings and orders (one order line per
// bought product, one payment per order). Memory is one customer's data at a time. It stops at
// the first error from fn or when ctx is done.
func (g *Generator) Each(ctx context.Context, fn func(CustomerData) error) error {
	orderNo := FirstOrderNumber
	for i := 0; i < g.customers; i++ {
		if i%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		d := g.CustomerData(i)
		r := g.rng(tagRatings, -1-i)
		for start := 0; start < len(d.Ratings); {
			n := min(1+r.IntN(18), len(d.Ratings)-start)
			od := orderEpoch.AddDate(0, 0, r.IntN(orderSpan))
			o := Order{
				Number:         orderNo,
				CustomerNumber: d.Customer.Number,
				OrderDate:      od,
				RequiredDate:   od.AddDate(0, 0, 7+r.IntN(4)),
				Status:         orderStatus[r.IntN(len(orderStatus))],
				CheckNumber:    string(rune('A'+r.IntN(26))) + string(rune('A'+r.IntN(26))) + strconv.Itoa(100000+orderNo),
			}
			if o.Status != "In Process" && o.Status != "Cancelled" {
				o.ShippedDate = ptr(od.AddDate(0, 0, 1+r.IntN(6)))
			}
			if r.IntN(4) == 0 {
				o.Comments = ptr(orderComment[r.IntN(len(orderComment))])
			}
			for l := 0; l < n; l++ {
				rt := d.Ratings[start+l]
				p := g.productByCode(rt.ProductCode)
				o.Lines = append(o.Lines, OrderLine{ProductCode: rt.ProductCode, QuantityOrdered: 20 + r.IntN(31), PriceEachCents: p.MSRPCents * int64(80+r.IntN(21)) / 100, LineNumber: l + 1})
			}
			d.Orders = append(d.Orders, o)
			orderNo++
			start += n
		}
		if err := fn(d); err != nil {
			return err
		}
	}
	return nil
}

// EachTrainingRow calls fn for every rating of the generated data joined with its customer
// and product, as the ETL's training dataset holds it (customers in order, then products by
// code), without a database: what `batch seed --scale` and `batch etl` would publish.
func (g *Generator) EachTrainingRow(ctx context.Context, fn func(dataset.TrainingRow) error) error {
	for i := 0; i < g.customers; i++ {
		if i%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		d := g.CustomerData(i)
		c := d.Customer
		for _, r := range d.Ratings {
			p := g.productByCode(r.ProductCode)
			row := dataset.TrainingRow{
				CustomerNumber: c.Number, City: c.City, State: c.State, PostalCode: c.PostalCode, Country: c.Country,
				CreditLimit: float64(c.CreditLimitCents) / 100, CreditLimitCents: c.CreditLimitCents,
				ProductCode: p.Code, ProductLine: p.Line, ProductScale: p.Scale, QuantityInStock: p.QuantityInStock,
				BuyPrice: float64(p.BuyPriceCents) / 100, BuyPriceCents: p.BuyPriceCents, MSRP: float64(p.MSRPCents) / 100, MSRPCents: p.MSRPCents,
				ProductRating: r.Rating,
			}
			if err := fn(row); err != nil {
				return err
			}
		}
	}
	return nil
}

// productByCode finds a product by code; codes are S<scale>_<1000+j>, so the index is parsed.
func (g *Generator) productByCode(code string) Product {
	for k := len(code) - 1; k >= 0; k-- {
		if code[k] == '_' {
			j, _ := strconv.Atoi(code[k+1:])
			return g.products[j-1000]
		}
	}
	return Product{}
}

// Office is one offices row; the generator uses the seven real offices.
type Office struct {
	Code, City, Phone, AddressLine1 string
	AddressLine2, State             *string
	Country, PostalCode, Territory  string
}

// Offices returns the seven classicmodels offices.
func (g *Generator) Offices() []Office {
	return []Office{
		{"1", "San Francisco", "+1 650 219 4782", "100 Market Street", ptr("Suite 300"), ptr("CA"), "USA", "94080", "NA"},
		{"2", "Boston", "+1 215 837 0825", "1550 Court Place", ptr("Suite 102"), ptr("MA"), "USA", "02107", "NA"},
		{"3", "NYC", "+1 212 555 3000", "523 East 53rd Street", ptr("apt. 5A"), ptr("NY"), "USA", "10022", "NA"},
		{"4", "Paris", "+33 14 723 4404", "43 Rue Jouffroy D'abbans", nil, nil, "France", "75017", "EMEA"},
		{"5", "Tokyo", "+81 33 224 5000", "4-1 Kioicho", nil, ptr("Chiyoda-Ku"), "Japan", "102-8578", "Japan"},
		{"6", "Sydney", "+61 2 9264 2451", "5-11 Wentworth Avenue", ptr("Floor #2"), nil, "Australia", "NSW 2010", "APAC"},
		{"7", "London", "+44 20 7877 2041", "25 Old Broad Street", ptr("Level 7"), nil, "UK", "EC2N 1HN", "EMEA"},
	}
}

// Employee is one employees row.
type Employee struct {
	Number                                int
	LastName, FirstName, Extension, Email string
	OfficeCode                            string
	ReportsTo                             *int
	JobTitle                              string
}

// Employees returns the president (1002), one manager per office (1100+office) and the sales
// reps (2000+r) that customers' salesRepEmployeeNumber points at, managers before reports.
func (g *Generator) Employees() []Employee {
	out := []Employee{{Number: 1002, LastName: "Murphy", FirstName: "Diane", Extension: "x5800", Email: "dmurphy@classicmodelcars.com", OfficeCode: "1", JobTitle: "President"}}
	for o := 1; o <= 7; o++ {
		r := g.rng(tagEmployee, 100+o)
		out = append(out, Employee{Number: 1100 + o, LastName: lastNames[r.IntN(len(lastNames))], FirstName: firstNames[r.IntN(len(firstNames))],
			Extension: "x" + strconv.Itoa(1000+r.IntN(9000)), Email: "manager" + strconv.Itoa(o) + "@classicmodelcars.com", OfficeCode: strconv.Itoa(o), ReportsTo: ptr(1002), JobTitle: "Sales Manager"})
	}
	for i := 0; i < g.reps; i++ {
		r := g.rng(tagEmployee, 1000+i)
		o := 1 + i%7
		out = append(out, Employee{Number: 2000 + i, LastName: lastNames[r.IntN(len(lastNames))], FirstName: firstNames[r.IntN(len(firstNames))],
			Extension: "x" + strconv.Itoa(1000+r.IntN(9000)), Email: "rep" + strconv.Itoa(2000+i) + "@classicmodelcars.com", OfficeCode: strconv.Itoa(o), ReportsTo: ptr(1100 + o), JobTitle: "Sales Rep"})
	}
	return out
}
