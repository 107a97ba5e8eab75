package etl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/internal/objstore"
)

// storeQueue stores every queued file at once, in place of the uploads.
type storeQueue struct {
	ctx   context.Context
	store objstore.Store
	keys  []string
	fail  error // returned by queue once set
}

func (q *storeQueue) queue(key string, buf *bytes.Buffer) error {
	if q.fail != nil {
		return q.fail
	}
	q.keys = append(q.keys, key)
	return q.store.Put(q.ctx, key, bytes.NewReader(buf.Bytes()))
}

// TestExportWriterPartitionsAndRollsFiles: rows grouped by customer become one partition each,
// a file holds at most rowGroupRows rows, and what the manifest names reads back as written.
func TestExportWriterPartitionsAndRollsFiles(t *testing.T) {
	ctx := context.Background()
	store := fileStore(t)
	q := &storeQueue{ctx: ctx, store: store}
	m := dataset.NewManifest("unit-1", 2)
	w := newExportWriter(q, m, "unit-1", 1, 2, 3)
	var queued []int
	w.afterFile = func(files int) error { queued = append(queued, files); return nil }
	rows := map[int]int{101: 7, 102: 1, 105: 3} // customer → ratings
	for _, c := range []int{101, 102, 105} {
		for i := range rows[c] {
			if err := w.add(c, dataset.FileRow{City: "Nantes", Country: "France", ProductCode: fmt.Sprintf("S10_%04d", i), ProductLine: "Ships",
				ProductScale: "1:10", QuantityInStock: 5, BuyPrice: 1234, MSRP: 2345, ProductRating: int32(1 + i%5)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	// 101: 3+3+1 rows, 102: 1, 105: 3.
	if w.files != 5 || len(q.keys) != 5 || fmt.Sprint(queued) != "[1 2 3 4 5]" || m.RunRows != 11 || len(m.Partitions) != 3 {
		t.Fatalf("files %d (queued %v), run rows %d, partitions %d", w.files, queued, m.RunRows, len(m.Partitions))
	}
	if want := dataFileKey(101, "unit-1", 1, 2, 2); q.keys[2] != want || fileRunID(want) != "unit-1" {
		t.Fatalf("third file %s, want %s", q.keys[2], want)
	}
	var total int64
	for _, p := range m.Partitions {
		for _, f := range p.Files {
			if f.Rows > 3 {
				t.Fatalf("file %s has %d rows, row_group_rows is 3", f.Key, f.Rows)
			}
			total += f.Bytes
		}
		if p.Rows != int64(rows[p.CustomerNumber]) || p.RunID != "unit-1" {
			t.Fatalf("partition %+v, want %d rows of run unit-1", p, rows[p.CustomerNumber])
		}
	}
	if total != w.bytes {
		t.Fatalf("files hold %d bytes, writer counted %d", total, w.bytes)
	}
	got := map[int]int{}
	err := dataset.ReadTrainingRows(ctx, store, m, func(r dataset.TrainingRow) error {
		if r.BuyPriceCents != 1234 || r.MSRP != 23.45 || r.City != "Nantes" {
			return fmt.Errorf("row %+v", r)
		}
		got[r.CustomerNumber]++
		return nil
	})
	if err != nil || fmt.Sprint(got) != fmt.Sprint(rows) {
		t.Fatalf("read back %v (%v), want %v", got, err, rows)
	}
}

// TestExportWriterStopsOnQueueError: a failed upload ends the export with its error.
func TestExportWriterStopsOnQueueError(t *testing.T) {
	failed := errors.New("upload failed")
	q := &storeQueue{ctx: context.Background(), store: fileStore(t), fail: failed}
	w := newExportWriter(q, dataset.NewManifest("unit-2", 1), "unit-2", 0, 1, 1)
	if err := w.add(7, dataset.FileRow{ProductRating: 3}); !errors.Is(err, failed) {
		t.Fatalf("got %v, want the queue's error", err)
	}
}

// TestReadTrainingRowsInOrder: the files are decoded ahead in parallel, yet the rows come in
// manifest order, file by file and row by row; an error from the callback ends the read with
// that error and no further call, and a missing file is an error naming it.
func TestReadTrainingRowsInOrder(t *testing.T) {
	ctx := context.Background()
	store := fileStore(t)
	q := &storeQueue{ctx: ctx, store: store}
	m := dataset.NewManifest("unit-3", 2)
	w := newExportWriter(q, m, "unit-3", 0, 1, 2)
	var want []string
	for c := 1; c <= 60; c++ {
		for i := range 1 + c%5 {
			code := fmt.Sprintf("S%02d_%04d", c, i)
			want = append(want, fmt.Sprint(c, code))
			if err := w.add(c, dataset.FileRow{City: "Nantes", Country: "France", ProductCode: code, ProductLine: "Ships",
				ProductScale: "1:10", BuyPrice: 100, MSRP: 200, ProductRating: 3}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := dataset.ReadTrainingRows(ctx, store, m, func(r dataset.TrainingRow) error {
		got = append(got, fmt.Sprint(r.CustomerNumber, r.ProductCode))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows in another order than written:\n got %v\nwant %v", got, want)
	}

	stop := errors.New("enough")
	calls := 0
	err := dataset.ReadTrainingRows(ctx, store, m, func(dataset.TrainingRow) error {
		calls++
		if calls == 50 {
			return stop
		}
		return nil
	})
	if err != stop || calls != 50 {
		t.Fatalf("callback error: got %v after %d calls, want %v after 50", err, calls, stop)
	}

	missing := m.Partitions[30].Files[0].Key
	if err := store.Delete(ctx, missing); err != nil {
		t.Fatal(err)
	}
	calls = 0
	err = dataset.ReadTrainingRows(ctx, store, m, func(dataset.TrainingRow) error { calls++; return nil })
	if !errors.Is(err, objstore.ErrNotExist) || !strings.Contains(err.Error(), missing) || calls == 0 {
		t.Fatalf("missing file: got %v after %d rows, want an error naming %s", err, calls, missing)
	}
}
