package inference

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"
)

// Metrics describes a training run; they go into the model card (metrics).
type Metrics struct {
	// Rows is the number of ratings in the training data.
	Rows int `json:"rows"`
	// TrainRows of them trained the published model's content stage; the other
	// EarlyStoppingRows (the ratings of held-out customers) picked its epoch. The personal stage
	// trained on all Rows (see fit).
	TrainRows         int `json:"train_rows"`
	EarlyStoppingRows int `json:"early_stopping_rows"`
	// ContentEpoch is the content stage's kept epoch (0: the untrained model, which predicts
	// the mean rating) and ContentRMSE its RMSE in stars on the early-stopping ratings;
	// PersonalEpochs is how many epochs the personal stage ran and PersonalLoss its last
	// training loss (mean squared error on the scaled target in [-1, 1]).
	ContentEpoch   int     `json:"content_epoch"`
	ContentRMSE    float64 `json:"content_stop_rmse"`
	PersonalEpochs int     `json:"personal_epochs"`
	PersonalLoss   float64 `json:"personal_train_loss"`
	// Warm and Cold evaluate the training procedure on held-out data (see Evaluation).
	Warm Evaluation `json:"warm"`
	Cold Evaluation `json:"cold"`
}

// Evaluation scores one fit, trained like the published model but without the held-out part,
// on the held-out part. Warm: a seeded share of the ratings is held out (their customers have
// other ratings in training). Cold: a seeded share of the customers is held out with all their
// ratings (customers never seen in training). The held-out part is scored as the worker would
// score it: through the fit's encoders (fitted without it) and the model's embeddings. RMSEs
// are in stars; the model's prediction is clamp(2·(u·v) + 3, 1, 5) with the published item
// embeddings (PublishedItemEmbeddings); the baselines are fitted on the fit's ratings.
type Evaluation struct {
	Split     string `json:"split"` // "warm" or "cold"
	TrainRows int    `json:"train_rows"`
	TestRows  int    `json:"test_rows"`
	TestUsers int    `json:"test_users"`
	// ContentEpoch and PersonalEpochs describe the fit (see Metrics).
	ContentEpoch   int `json:"content_epoch"`
	PersonalEpochs int `json:"personal_epochs"`
	// ModelRMSE is the model's RMSE on the held-out ratings.
	ModelRMSE float64 `json:"model_rmse"`
	// GlobalMeanRMSE predicts the mean training rating for every pair.
	GlobalMeanRMSE float64 `json:"global_mean_rmse"`
	// ItemMeanRMSE predicts the item's mean training rating (the global mean for an item with
	// no training rating).
	ItemMeanRMSE float64 `json:"item_mean_rmse"`
	// UserMeanRMSE (warm only) predicts the user's mean training rating shrunk toward the
	// global mean: mean + Σ(r − mean) / (n + UserMeanShrinkage).
	UserMeanRMSE float64 `json:"user_mean_rmse,omitempty"`
	// NDCGUsers held-out users have at least two held-out ratings; for each, their held-out
	// items are ranked by the model's score and, as a baseline, by item popularity (number of
	// training ratings; ties by product code). NDCG@5 uses gain 2^rating − 1 and discount
	// log2(rank + 1), and is averaged over those users.
	NDCGUsers      int     `json:"ndcg_users"`
	ModelNDCG      float64 `json:"model_ndcg_at_5"`
	PopularityNDCG float64 `json:"popularity_ndcg_at_5"`
}

// UserMeanShrinkage is k of the shrunk per-user mean baseline.
const UserMeanShrinkage = 5

// NDCGDepth is the rank cut-off of the ranking metric.
const NDCGDepth = 5

// evaluate scores model (fitted on train) on test.
func evaluate(model *Model, train, test []Example, userMean bool) Evaluation {
	ev := Evaluation{TrainRows: len(train), TestRows: len(test)}
	// The model's scores, through the serving path: encode and embed each distinct user and item.
	var sum float64
	itemSum, itemN := map[string]float64{}, map[string]int{}
	for _, e := range train {
		sum += e.Rating
		itemSum[e.ProductCode] += e.Rating
		itemN[e.ProductCode]++
	}
	// The published embeddings of every item of the fit and of the test (their popularity
	// priors rank them among each other).
	uIdx, iIdx := map[int64]int{}, map[string]int{}
	var uf []UserFeatures
	var items []Item
	for _, part := range [][]Example{train, test} {
		for _, e := range part {
			if _, ok := iIdx[e.ProductCode]; !ok {
				iIdx[e.ProductCode] = len(items)
				items = append(items, Item{ProductCode: e.ProductCode, Features: e.Item, Ratings: itemN[e.ProductCode]})
			}
		}
	}
	for _, e := range test {
		if _, ok := uIdx[e.CustomerNumber]; !ok {
			uIdx[e.CustomerNumber] = len(uf)
			uf = append(uf, e.User)
		}
	}
	ue, ie := model.UserEmbeddings(uf), model.PublishedItemEmbeddings(items)

	mean := sum / float64(len(train))
	userSum, userN := map[int64]float64{}, map[int64]int{}
	for _, e := range train {
		userSum[e.CustomerNumber] += e.Rating - mean
		userN[e.CustomerNumber]++
	}
	rows := make([]scored, len(test))
	var se [4]float64
	for k, e := range test {
		s := dot(ue[uIdx[e.CustomerNumber]], ie[iIdx[e.ProductCode]])
		rows[k] = scored{user: e.CustomerNumber, item: e.ProductCode, stars: e.Rating, score: s, pop: itemN[e.ProductCode]}
		item := mean
		if n := itemN[e.ProductCode]; n > 0 {
			item = itemSum[e.ProductCode] / float64(n)
		}
		user := mean + userSum[e.CustomerNumber]/(float64(userN[e.CustomerNumber])+UserMeanShrinkage)
		for j, p := range []float64{scaledToStars(s), mean, item, user} {
			se[j] += (p - e.Rating) * (p - e.Rating)
		}
	}
	n := float64(len(test))
	ev.ModelRMSE, ev.GlobalMeanRMSE, ev.ItemMeanRMSE = math.Sqrt(se[0]/n), math.Sqrt(se[1]/n), math.Sqrt(se[2]/n)
	if userMean {
		ev.UserMeanRMSE = math.Sqrt(se[3] / n)
	}
	ev.TestUsers = len(uf)

	// Rank each held-out user's held-out items (test is sorted by customer, then product).
	var model_, pop float64
	for lo := 0; lo < len(rows); {
		hi := lo
		for hi < len(rows) && rows[hi].user == rows[lo].user {
			hi++
		}
		if us := rows[lo:hi]; len(us) >= 2 {
			ev.NDCGUsers++
			model_ += ndcg(us, func(a, b scored) int { return cmp.Or(cmp.Compare(b.score, a.score), cmp.Compare(a.item, b.item)) })
			pop += ndcg(us, func(a, b scored) int { return cmp.Or(cmp.Compare(b.pop, a.pop), cmp.Compare(a.item, b.item)) })
		}
		lo = hi
	}
	if ev.NDCGUsers > 0 {
		ev.ModelNDCG, ev.PopularityNDCG = model_/float64(ev.NDCGUsers), pop/float64(ev.NDCGUsers)
	}
	return ev
}

// scored is one held-out rating with the model's score and its item's popularity.
type scored struct {
	user  int64
	item  string
	stars float64
	score float32
	pop   int
}

// ndcg is NDCG@NDCGDepth of rows (one user's held-out ratings) ranked by order.
func ndcg(rows []scored, order func(a, b scored) int) float64 {
	ranked := slices.Clone(rows)
	slices.SortStableFunc(ranked, order)
	ideal := slices.Clone(rows)
	slices.SortStableFunc(ideal, func(a, b scored) int { return cmp.Compare(b.stars, a.stars) })
	return dcg(ranked) / dcg(ideal)
}

func dcg(rows []scored) float64 {
	var s float64
	for k, r := range rows[:min(len(rows), NDCGDepth)] {
		s += (math.Exp2(r.stars) - 1) / math.Log2(float64(k)+2)
	}
	return s
}

// WriteTable prints the evaluation as a small table.
func (m Metrics) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	f := func(v float64) string { return fmt.Sprintf("%.4f", v) }
	fmt.Fprintln(tw, "split\theld out\tRMSE model\tglobal mean\titem mean\tuser mean\tNDCG@5 model\tpopularity\t")
	for _, e := range []Evaluation{m.Warm, m.Cold} {
		held := fmt.Sprintf("%d ratings", e.TestRows)
		user := "-"
		if e.Split == PhaseCold {
			held = fmt.Sprintf("%d customers", e.TestUsers)
		} else {
			user = f(e.UserMeanRMSE)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", e.Split, held, f(e.ModelRMSE), f(e.GlobalMeanRMSE), f(e.ItemMeanRMSE), user, f(e.ModelNDCG), f(e.PopularityNDCG))
	}
	return tw.Flush()
}
