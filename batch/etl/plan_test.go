package etl

import (
	"bytes"
	"strings"
	"testing"

	"github.com/recstream/recstream/batch/seed/seedtest"
)

func TestETLDryRunWritesNothing(t *testing.T) {
	db, _ := seedtest.DB(t)
	seedtest.Shared(t, db)
	ctx := testCtx(t)
	store := fileStore(t)
	p, err := newETL(t, db, store, Options{}).Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.SourceRows != 2532 || p.Customers != 98 || p.Published != nil || p.LockHolder != "" {
		t.Fatalf("plan %+v", p)
	}
	var out bytes.Buffer
	if err := p.Write(&out); err != nil || !strings.Contains(out.String(), "2532 ratings over 98 customers") {
		t.Fatalf("plan text %q (%v)", out.String(), err)
	}
	if objs, err := store.List(ctx, ""); err != nil || len(objs) != 0 {
		t.Fatalf("dry run wrote %v (%v)", objs, err)
	}
}
