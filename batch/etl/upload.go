package etl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"golang.org/x/sync/errgroup"
)

// putter is what the uploads need of the datalake store.
type putter interface {
	Put(ctx context.Context, key string, body io.Reader) error
}

// bufPool recycles the buffers finished files are encoded into: the writer takes one per file,
// the uploader returns it once the file is stored.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// fileJob is one finished Parquet file waiting for upload.
type fileJob struct {
	key string
	buf *bytes.Buffer
}

// uploader stores finished files with a fixed number of uploads in flight, so encoding the
// next file overlaps with storing the previous ones while memory stays bounded by the queue.
// The first failed upload stops the others and is what queue and wait return.
type uploader struct {
	jobs chan fileJob
	g    *errgroup.Group
	ctx  context.Context // the uploads' context: done once one failed
}

// startUploads starts n upload goroutines putting files into store. The caller must call wait.
func startUploads(ctx context.Context, store putter, n int) *uploader {
	g, gctx := errgroup.WithContext(ctx)
	u := &uploader{jobs: make(chan fileJob, n), g: g, ctx: gctx}
	for i := 0; i < n; i++ {
		g.Go(func() error {
			for j := range u.jobs {
				err := store.Put(gctx, j.key, bytes.NewReader(j.buf.Bytes()))
				j.buf.Reset()
				bufPool.Put(j.buf)
				if err != nil {
					return fmt.Errorf("upload: %w", err)
				}
			}
			return nil
		})
	}
	return u
}

// queue hands a finished file to the uploads, waiting while all of them are busy. It returns
// the first upload's error (or the context's) once the uploads have stopped.
func (u *uploader) queue(key string, buf *bytes.Buffer) error {
	select {
	case u.jobs <- fileJob{key: key, buf: buf}:
		return nil
	case <-u.ctx.Done():
		return context.Cause(u.ctx)
	}
}

// wait lets the queued files finish uploading and returns the first upload error.
func (u *uploader) wait() error {
	close(u.jobs)
	return u.g.Wait()
}
