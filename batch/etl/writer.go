package etl

import (
	"bytes"
	"fmt"
	"io"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/snappy"

	"github.com/recstream/recstream/batch/dataset"
)

// fileQueue takes finished data files; the uploader is the real one.
type fileQueue interface {
	queue(key string, buf *bytes.Buffer) error
}

// exportWriter turns one shard's joined rows, which arrive grouped by customer, into partition
// files: one open partition and one open file at a time, a new file after rowGroupRows rows (so
// a file is one row group and memory stays bounded however many ratings one customer has).
// Finished files go to the queue and into the shard's manifest.
type exportWriter struct {
	out          fileQueue
	manifest     *dataset.Manifest // the shard's: gets the partitions and RunRows
	runID        string
	shard        int
	shards       int
	rowGroupRows int64
	// afterFile, when set (tests), runs after each file is queued; an error aborts the export.
	afterFile func(files int) error

	enc      *parquet.GenericWriter[dataset.FileRow]
	pending  []dataset.FileRow // rows not yet handed to enc (it encodes in batches)
	buf      *bytes.Buffer     // the open file's bytes; nil when no file is open
	fileRows int64             // rows in the open file
	part     dataset.Partition // the open partition
	open     bool              // a partition is open
	seq      int               // the open partition's next file number

	files int   // files queued
	bytes int64 // their size
}

// newExportWriter writes the files of shard shard/shards of run runID and records them in m.
func newExportWriter(files fileQueue, m *dataset.Manifest, runID string, shard, shards, rowGroupRows int) *exportWriter {
	return &exportWriter{
		out: files, manifest: m, runID: runID, shard: shard, shards: shards, rowGroupRows: int64(rowGroupRows),
		enc:     parquet.NewGenericWriter[dataset.FileRow](io.Discard, parquet.Compression(&snappy.Codec{}), parquet.CreatedBy("recstream", "batch etl", "")),
		pending: make([]dataset.FileRow, 0, 512),
	}
}

// add writes row into the partition of customer; a new customer closes the open partition.
func (w *exportWriter) add(customer int, row dataset.FileRow) error {
	if !w.open || customer != w.part.CustomerNumber {
		if err := w.closePartition(); err != nil {
			return err
		}
		w.part, w.open, w.seq = dataset.Partition{CustomerNumber: customer, RunID: w.runID}, true, 0
	}
	if w.buf == nil {
		w.buf = bufPool.Get().(*bytes.Buffer)
		w.enc.Reset(w.buf)
	}
	w.pending = append(w.pending, row)
	w.fileRows++
	w.manifest.RunRows++
	if len(w.pending) == cap(w.pending) {
		if err := w.flushPending(); err != nil {
			return err
		}
	}
	if w.fileRows >= w.rowGroupRows {
		return w.closeFile()
	}
	return nil
}

// close finishes the last partition.
func (w *exportWriter) close() error { return w.closePartition() }

// closePartition finishes the open partition's last file and adds the partition to the
// manifest.
func (w *exportWriter) closePartition() error {
	if !w.open {
		return nil
	}
	if err := w.closeFile(); err != nil {
		return err
	}
	if w.part.Rows > 0 {
		w.manifest.Partitions = append(w.manifest.Partitions, w.part)
	}
	w.open = false
	return nil
}

// closeFile finishes the open file and queues it for upload.
func (w *exportWriter) closeFile() error {
	if w.buf == nil {
		return nil
	}
	if err := w.flushPending(); err != nil {
		return err
	}
	if err := w.enc.Close(); err != nil {
		return fmt.Errorf("encode parquet: %w", err)
	}
	key := dataFileKey(w.part.CustomerNumber, w.runID, w.shard, w.shards, w.seq)
	w.seq++
	size := int64(w.buf.Len())
	w.part.Files = append(w.part.Files, dataset.DataFile{Key: key, Rows: w.fileRows, Bytes: size})
	w.part.Rows += w.fileRows
	w.files++
	w.bytes += size
	if err := w.out.queue(key, w.buf); err != nil {
		return err
	}
	w.buf, w.fileRows = nil, 0
	if w.afterFile != nil {
		return w.afterFile(w.files)
	}
	return nil
}

// flushPending hands the pending rows to the encoder.
func (w *exportWriter) flushPending() error {
	if len(w.pending) == 0 {
		return nil
	}
	if _, err := w.enc.Write(w.pending); err != nil {
		return fmt.Errorf("encode parquet: %w", err)
	}
	clear(w.pending)
	w.pending = w.pending[:0]
	return nil
}
