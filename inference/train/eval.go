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

// evaluate scores model (fitted on the ratings train of r) on the ratings test of r.
func evaluate(model *inference.Model, r *Ratings, train, test []int32, userMean bool) inference.Evaluation {
	ev := inference.Evaluation{TrainRows: len(train), TestRows: len(test)}
	var sum float64
	itemSum, itemN := make([]float64, len(r.Items)), make([]int, len(r.Items))
	userSum, userN := make([]float64, len(r.Users)), make([]int, len(r.Users))
	for _, k := range train {
		s := float64(r.Stars[k])
		sum += s
		itemSum[r.I[k]] += s
		itemN[r.I[k]]++
	}
	mean := sum / float64(len(train))
	for _, k := range train {
		userSum[r.U[k]] += float64(r.Stars[k]) - mean
		userN[r.U[k]]++
	}
	// The model's scores, through the serving path: encode and embed each distinct user and
	// item. The published embeddings of every item of the fit and of the test (their
	// popularity priors rank them among each other).
	iIdx, uIdx := make([]int32, len(r.Items)), make([]int32, len(r.Users))
	for k := range iIdx {
		iIdx[k] = -1
	}
	for k := range uIdx {
		uIdx[k] = -1
	}
	for _, part := range [][]int32{train, test} {
		for _, k := range part {
			iIdx[r.I[k]] = 0
		}
	}
	var items []Item
	for i, used := range iIdx {
		if used == 0 {
			iIdx[i] = int32(len(items))
			it := r.Items[i]
			it.Ratings = itemN[i]
			items = append(items, it)
		}
	}
	var users []int32
	for _, k := range test {
		if u := r.U[k]; uIdx[u] < 0 {
			uIdx[u] = int32(len(users))
			users = append(users, u)
		}
	}
	ue, ie := UserEmbeddings(model, r.userFeatures(users)), PublishedItemEmbeddings(model, items)

	rows := make([]scored, len(test))
	var se [4]float64
	for n, k := range test {
		u, i, stars := r.U[k], r.I[k], float64(r.Stars[k])
		s := inference.Dot(ue[uIdx[u]], ie[iIdx[i]])
		rows[n] = scored{user: r.Users[u].CustomerNumber, item: r.Items[i].ProductCode, stars: stars, score: s, pop: itemN[i]}
		item := mean
		if itemN[i] > 0 {
			item = itemSum[i] / float64(itemN[i])
		}
		user := mean + userSum[u]/(float64(userN[u])+UserMeanShrinkage)
		for j, p := range []float64{inference.Stars(s), mean, item, user} {
			se[j] += (p - stars) * (p - stars)
		}
	}
	n := float64(len(test))
	ev.ModelRMSE, ev.GlobalMeanRMSE, ev.ItemMeanRMSE = math.Sqrt(se[0]/n), math.Sqrt(se[1]/n), math.Sqrt(se[2]/n)
	if userMean {
		ev.UserMeanRMSE = math.Sqrt(se[3] / n)
	}
	ev.TestUsers = len(users)

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

// embedChunk is how many users UserEmbeddings encodes at once: a user's dense input is as wide
// as the profiles (up to MaxProfiles), so all of a shop's customers at once would take
// gigabytes.
const embedChunk = 256

// UserEmbeddings returns m.UserEmbeddings(users), computed embedChunk users at a time.
func UserEmbeddings(m *inference.Model, users []inference.UserFeatures) [][]float32 {
	out := make([][]float32, 0, len(users))
	for lo := 0; lo < len(users); lo += embedChunk {
		out = append(out, m.UserEmbeddings(users[lo:min(lo+embedChunk, len(users))])...)
	}
	return out
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
