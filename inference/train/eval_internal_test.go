package train

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestNDCG(t *testing.T) {
	rows := []scored{{item: "a", stars: 5, score: 0.1}, {item: "b", stars: 1, score: 0.9}, {item: "c", stars: 3, score: 0.5}}
	byScore := func(a, b scored) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.item, b.item)
	}
	// Ranked b(1), c(3), a(5); ideal a, c, b. Gains 2^r − 1: 1, 7, 31.
	got := ndcg(rows, byScore)
	want := (1 + 7/math.Log2(3) + 31/math.Log2(4)) / (31 + 7/math.Log2(3) + 1/math.Log2(4))
	if math.Abs(got-want) > 1e-12 {
		t.Fatalf("ndcg = %v, want %v", got, want)
	}
	if got := ndcg(rows, func(a, b scored) int { return int(b.stars - a.stars) }); got != 1 {
		t.Fatalf("ideal ranking: ndcg = %v, want 1", got)
	}
	// Only the first NDCGDepth ranks count.
	var many []scored
	for k := 0; k < 8; k++ {
		many = append(many, scored{item: fmt.Sprint(k), stars: float64(1 + k%5), score: float32(k)})
	}
	if got := ndcg(many, byScore); !(got > 0 && got < 1) {
		t.Fatalf("ndcg over 8 = %v", got)
	}
}
