package inference

// Example is one training rating: a customer's features, a product's features and the rating
// in stars (1 to 5). It is one row of the ETL's ratings ⋈ products ⋈ customers join. Package
// train trains on it (as train.Example); it is declared here only because ReadLabCSV, whose
// file is moving onto a shared CSV reader, returns it.
type Example struct {
	CustomerNumber int64
	User           UserFeatures
	ProductCode    string
	Item           ItemFeatures
	Rating         float64
}

// Item is a product and the features the item tower embeds. Package train publishes its
// embedding (as train.Item); it is declared here only because ReadProductsCSV returns it.
type Item struct {
	ProductCode string
	Features    ItemFeatures
	// Ratings is the number of training ratings of the product (its popularity).
	Ratings int
}
