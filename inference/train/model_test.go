package train_test

import (
	"testing"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train/traintest"
)

// TestUnknownProfileGetsTheContentModel: the identity units contribute nothing for a customer
// whose profile the model does not know, and the trained towers keep the block structure.
func TestUnknownProfileGetsTheContentModel(t *testing.T) {
	m := traintest.RealModel(t).Model
	content := m.User.Clone()
	c1, c2 := inference.Hidden1-inference.IdentityHidden1, inference.Hidden2-inference.IdentityHidden2
	d0, d1, d2 := &content.Layers[0], &content.Layers[1], &content.Layers[2]
	for o := c1; o < inference.Hidden1; o++ {
		clear(d0.W[o*d0.In : (o+1)*d0.In])
		if d0.B[o] != 0 {
			t.Fatalf("identity unit %d has bias %g", o, d0.B[o])
		}
	}
	for o := c2; o < inference.Hidden2; o++ {
		clear(d1.W[o*d1.In : (o+1)*d1.In])
	}
	for o := 0; o < inference.EmbeddingDim; o++ {
		clear(d2.W[o*d2.In+c2 : (o+1)*d2.In])
	}
	cm := *m
	cm.User = content
	known := traintest.RealModel(t).Users[0].Features
	unknown := known
	unknown.CreditLimit += 100 // same city and country, another profile
	if got, want := m.UserEmbedding(unknown), cm.UserEmbedding(unknown); !traintest.BitsEqual(got, want) {
		t.Fatalf("unknown profile: embedding %v, content model %v", got, want)
	}
	if got, want := m.UserEmbedding(known), cm.UserEmbedding(known); traintest.BitsEqual(got, want) {
		t.Fatal("a known customer gets the content model's embedding: no personalisation")
	}
}
