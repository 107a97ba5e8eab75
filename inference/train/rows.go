package train

import (
	etldataset "github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/inference"
)

// ExampleFromRow is the training example of one row of the ETL's dataset (or of the
// generator, which yields the same rows).
func ExampleFromRow(r etldataset.TrainingRow) Example {
	return Example{
		CustomerNumber: int64(r.CustomerNumber),
		User:           inference.UserFeatures{City: r.City, Country: r.Country, CreditLimit: r.CreditLimit},
		ProductCode:    r.ProductCode,
		Item: inference.ItemFeatures{ProductLine: r.ProductLine, ProductScale: r.ProductScale,
			QuantityInStock: float64(r.QuantityInStock), BuyPrice: r.BuyPrice, MSRP: r.MSRP},
		Rating: float64(r.ProductRating),
	}
}
