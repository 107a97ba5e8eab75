package train

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"

	"github.com/recstream/recstream/inference"
)

// UserMeanShrinkage is k of the shrunk per-user mean baseline.
const UserMeanShrinkage = 5

// NDCGDepth is the rank cut-off of the ranking metric.
const NDCGDepth = 5

// evaluate scores model (fitted on train) on test.
func evaluate(model *inference.Model, train, test []Example, userMean bool) inference.Evaluation {
	ev := inference.Evaluation{TrainRows: len(train), TestRows: len(test)}
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
	var uf []inference.UserFeatures
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
	ue, ie := model.UserEmbeddings(uf), PublishedItemEmbeddings(model, items)

	mean := sum / float64(len(train))
	userSum, userN := map[int64]float64{}, map[int64]int{}
	for _, e := range train {
		userSum[e.CustomerNumber] += e.Rating - mean
		userN[e.CustomerNumber]++
	}
	rows := make([]scored, len(test))
	var se [4]float64
	for k, e := range test {
		s := inference.Dot(ue[uIdx[e.CustomerNumber]], ie[iIdx[e.ProductCode]])
		rows[k] = scored{user: e.CustomerNumber, item: e.ProductCode, stars: e.Rating, score: s, pop: itemN[e.ProductCode]}
		item := mean
		if n := itemN[e.ProductCode]; n > 0 {
			item = itemSum[e.ProductCode] / float64(n)
		}
		user := mean + userSum[e.CustomerNumber]/(float64(userN[e.CustomerNumber])+UserMeanShrinkage)
		for j, p := range []float64{inference.Stars(s), mean, item, user} {
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

// WriteTable prints the evaluation of m (warm and cold splits) as a small table, the one
// `recstream train` prints. It returns the writer's error.
func WriteTable(w io.Writer, m inference.Metrics) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	f := func(v float64) string { return fmt.Sprintf("%.4f", v) }
	fmt.Fprintln(tw, "split\theld out\tRMSE model\tglobal mean\titem mean\tuser mean\tNDCG@5 model\tpopularity\t")
	for _, e := range []inference.Evaluation{m.Warm, m.Cold} {
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
