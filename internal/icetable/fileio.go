package icetable

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	iceio "github.com/apache/iceberg-go/io"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// iceberg-go finds a table's file system by the scheme of its location. We register our own
// "s3" implementation over the aws-sdk-go-v2 client the rest of recstream uses (its
// endpoint, credentials, throttling retries and, in tests, fault injection) instead of the
// library's gocloud one, which would link the GCS and Azure SDKs into the binary as well.

var (
	registerOnce sync.Once
	clientsMu    sync.RWMutex
	clients      = map[string]*s3.Client{} // bucket → client
	// opTimeout bounds one S3 call made for the library (it passes no context to Open).
	opTimeout = 30 * time.Second
)

// RegisterBucket makes s3://bucket/... locations readable and writable by iceberg-go through
// client. A bucket registered twice keeps the last client.
func RegisterBucket(bucket string, client *s3.Client) {
	registerOnce.Do(func() {
		iceio.Register("s3", func(_ context.Context, u *url.URL, _ map[string]string) (iceio.IO, error) {
			clientsMu.RLock()
			c := clients[u.Host]
			clientsMu.RUnlock()
			if c == nil {
				return nil, fmt.Errorf("iceberg file io: bucket %q is not registered", u.Host)
			}
			return &s3IO{client: c, bucket: u.Host}, nil
		})
	})
	clientsMu.Lock()
	clients[bucket] = client
	clientsMu.Unlock()
}

// s3IO implements iceio.IO, ReadFileIO, WriteFileIO, ListableIO and BulkRemovableIO for one
// bucket. Names are full locations (s3://bucket/key).
type s3IO struct {
	client *s3.Client
	bucket string
}

func (f *s3IO) key(name string) (string, error) {
	u, err := url.Parse(name)
	if err != nil {
		return "", fmt.Errorf("iceberg file io: %q: %w", name, err)
	}
	if u.Scheme != "s3" || u.Host != f.bucket {
		return "", fmt.Errorf("iceberg file io: %q is not in s3://%s", name, f.bucket)
	}
	return strings.TrimPrefix(u.Path, "/"), nil
}

func ctxTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

func notFound(err error) bool {
	var nsk *s3types.NoSuchKey
	var nf *s3types.NotFound
	return errors.As(err, &nsk) || errors.As(err, &nf)
}

func pathErr(op, name string, err error) error {
	if notFound(err) {
		err = fs.ErrNotExist
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// Open returns a file whose reads are ranged GETs: the library reads Parquet footers and
// manifests through it, so a data file is never downloaded whole just to add it.
func (f *s3IO) Open(name string) (iceio.File, error) {
	key, err := f.key(name)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	ctx, cancel := ctxTimeout()
	defer cancel()
	head, err := f.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &f.bucket, Key: &key})
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	return &s3File{io: f, name: name, key: key, size: aws.ToInt64(head.ContentLength), mod: aws.ToTime(head.LastModified)}, nil
}

func (f *s3IO) ReadFile(name string) ([]byte, error) {
	key, err := f.key(name)
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fs.ErrInvalid}
	}
	ctx, cancel := ctxTimeout()
	defer cancel()
	out, err := f.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &f.bucket, Key: &key})
	if err != nil {
		return nil, pathErr("read", name, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, pathErr("read", name, err)
	}
	return b, nil
}

func (f *s3IO) Remove(name string) error {
	key, err := f.key(name)
	if err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrInvalid}
	}
	ctx, cancel := ctxTimeout()
	defer cancel()
	if _, err := f.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &f.bucket, Key: &key}); err != nil && !notFound(err) {
		return pathErr("remove", name, err)
	}
	return nil
}

func (f *s3IO) DeleteFiles(ctx context.Context, paths []string) ([]string, error) {
	var deleted []string
	var errs []error
	for _, p := range paths {
		if err := f.Remove(p); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, p)
	}
	return deleted, errors.Join(errs...)
}

func (f *s3IO) WriteFile(name string, p []byte) error {
	key, err := f.key(name)
	if err != nil {
		return &fs.PathError{Op: "write", Path: name, Err: fs.ErrInvalid}
	}
	ctx, cancel := ctxTimeout()
	defer cancel()
	if _, err := f.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &f.bucket, Key: &key, Body: bytes.NewReader(p),
		ContentLength: aws.Int64(int64(len(p)))}); err != nil {
		return pathErr("write", name, err)
	}
	return nil
}

// Create buffers the file in memory and PUTs it on Close: metadata files and manifests are
// small, and a single PUT makes them appear whole or not at all.
func (f *s3IO) Create(name string) (iceio.FileWriter, error) {
	if _, err := f.key(name); err != nil {
		return nil, &fs.PathError{Op: "create", Path: name, Err: fs.ErrInvalid}
	}
	return &s3Writer{io: f, name: name}, nil
}

// WalkDir lists every object under root (S3 has no directories: fn sees files only).
func (f *s3IO) WalkDir(root string, fn fs.WalkDirFunc) error {
	prefix, err := f.key(root)
	if err != nil {
		return err
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	p := s3.NewListObjectsV2Paginator(f.client, &s3.ListObjectsV2Input{Bucket: &f.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		ctx, cancel := ctxTimeout()
		page, err := p.NextPage(ctx)
		cancel()
		if err != nil {
			return fn(root, nil, err)
		}
		for _, o := range page.Contents {
			name := "s3://" + f.bucket + "/" + aws.ToString(o.Key)
			info := fileInfo{name: path.Base(aws.ToString(o.Key)), size: aws.ToInt64(o.Size), mod: aws.ToTime(o.LastModified)}
			if err := fn(name, fs.FileInfoToDirEntry(info), nil); err != nil {
				if errors.Is(err, fs.SkipDir) || errors.Is(err, fs.SkipAll) {
					continue
				}
				return err
			}
		}
	}
	return nil
}

type s3Writer struct {
	io   *s3IO
	name string
	buf  bytes.Buffer
	done bool
}

func (w *s3Writer) Write(p []byte) (int, error) { return w.buf.Write(p) }

func (w *s3Writer) ReadFrom(r io.Reader) (int64, error) { return w.buf.ReadFrom(r) }

func (w *s3Writer) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	return w.io.WriteFile(w.name, w.buf.Bytes())
}

type s3File struct {
	io   *s3IO
	name string
	key  string
	size int64
	mod  time.Time
	off  int64
}

func (f *s3File) Stat() (fs.FileInfo, error) {
	return fileInfo{name: path.Base(f.key), size: f.size, mod: f.mod}, nil
}

func (f *s3File) ReadAt(p []byte, off int64) (int, error) {
	if off >= f.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	end := min(off+int64(len(p)), f.size) - 1
	ctx, cancel := ctxTimeout()
	defer cancel()
	rng := fmt.Sprintf("bytes=%d-%d", off, end)
	out, err := f.io.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &f.io.bucket, Key: &f.key, Range: &rng})
	if err != nil {
		return 0, pathErr("read", f.name, err)
	}
	defer out.Body.Close()
	n, err := io.ReadFull(out.Body, p[:end-off+1])
	if err != nil {
		return n, pathErr("read", f.name, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *s3File) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *s3File) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.size
	default:
		return 0, fmt.Errorf("seek %s: bad whence %d", f.name, whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek %s: negative offset", f.name)
	}
	f.off = offset
	return offset, nil
}

func (f *s3File) Close() error { return nil }

type fileInfo struct {
	name string
	size int64
	mod  time.Time
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.size }
func (i fileInfo) Mode() fs.FileMode  { return 0o444 }
func (i fileInfo) ModTime() time.Time { return i.mod }
func (i fileInfo) IsDir() bool        { return false }
func (i fileInfo) Sys() any           { return nil }

// clientFor returns the registered client of an s3:// location's bucket, and the location's
// bucket and key.
func clientFor(location string) (c *s3.Client, bucket, key string, err error) {
	u, err := url.Parse(location)
	if err != nil || u.Scheme != "s3" {
		return nil, "", "", fmt.Errorf("%q: not an s3:// location", location)
	}
	clientsMu.RLock()
	c = clients[u.Host]
	clientsMu.RUnlock()
	if c == nil {
		return nil, "", "", fmt.Errorf("%q: bucket %q is not registered", location, u.Host)
	}
	return c, u.Host, strings.TrimPrefix(u.Path, "/"), nil
}

// put writes size bytes of body at location (s3:// of a registered bucket) under ctx.
func put(ctx context.Context, location string, body io.Reader, size int64) error {
	c, bucket, key, err := clientFor(location)
	if err != nil {
		return err
	}
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: body, ContentLength: aws.Int64(size)})
	return err
}

// putLocation writes body at location under ctx: the worker's data files, whose writes are
// bounded by the lease like every other fenced write.
func putLocation(ctx context.Context, location string, body []byte) error {
	if err := put(ctx, location, bytes.NewReader(body), int64(len(body))); err != nil {
		return fmt.Errorf("iceberg data file: %w", err)
	}
	return nil
}

// putFile uploads a spooled file to location (s3:// of a registered bucket).
func putFile(ctx context.Context, location string, f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return put(ctx, location, f, st.Size())
}
