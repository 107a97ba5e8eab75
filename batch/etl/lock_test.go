package etl

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/batch/seed/seedtest"
	"github.com/recstream/recstream/internal/stacktest"
)

func TestETLOverlappingRunExitsWithHolder(t *testing.T) {
	db, _ := seedtest.DB(t)
	seedtest.Shared(t, db)
	ctx := testCtx(t)
	store := fileStore(t)
	var dbName string
	if err := db.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	lock, _ := lockNames(dbName, store.URL(dataset.Prefix), 0, 1)

	// A "running" first job: it holds the lock on its own connection.
	holder, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var holderID int64
	if err := holder.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&holderID); err != nil {
		t.Fatal(err)
	}
	if ok, err := getLock(ctx, holder, lock, 0); err != nil || !ok {
		t.Fatalf("take lock: %v %v", ok, err)
	}
	_, err = newETL(t, db, store, Options{}).Run(ctx)
	var locked *LockedError
	if !errors.As(err, &locked) {
		t.Fatalf("second run: got %v, want *LockedError", err)
	}
	if !strings.Contains(locked.Error(), fmt.Sprintf("MySQL connection %d", holderID)) {
		t.Errorf("lock error %q does not name holder connection %d", locked.Error(), holderID)
	}
	if _, err := dataset.ReadManifest(ctx, store); !errors.Is(err, dataset.ErrNoDataset) {
		t.Errorf("the locked-out run published something: %v", err)
	}
	// The holder dies: its session ends, and with it the lock.
	if _, err := db.ExecContext(ctx, "KILL ?", holderID); err != nil {
		t.Fatal(err)
	}
	holder.Close()
	stacktest.Eventually(t, 30*time.Second, 100*time.Millisecond, func() bool {
		var free int
		return db.QueryRowContext(ctx, "SELECT IS_FREE_LOCK(?)", lock).Scan(&free) == nil && free == 1
	}, "lock %s still held after its holder's connection was killed", lock)
	if res := runETL(t, ctx, newETL(t, db, store, Options{})); !res.Published {
		t.Fatal("run after the holder died did not publish")
	}
}
