package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// spoolLimit is the largest body Put keeps in memory when it must make a reader seekable;
// larger bodies go through a temporary file so memory stays bounded.
const spoolLimit = 8 << 20

// S3 is a Store in an S3 bucket under an optional prefix. A single PutObject is atomic in S3:
// readers see the old object or the new one.
type S3 struct {
	client *s3.Client
	bucket string
	prefix string // "" or "a/b" (no trailing slash)
}

// NewS3 returns a store for bucket/prefix. It does no I/O.
func NewS3(client *s3.Client, bucket, prefix string) (*S3, error) {
	if client == nil {
		return nil, errors.New("s3 store: nil client")
	}
	if bucket == "" {
		return nil, errors.New("s3 store: empty bucket")
	}
	return &S3{client: client, bucket: bucket, prefix: strings.Trim(prefix, "/")}, nil
}

func (s *S3) full(key string) string {
	if s.prefix == "" {
		return key
	}
	return s.prefix + "/" + key
}

// URL implements Store.
func (s *S3) URL(key string) string { return "s3://" + s.bucket + "/" + s.full(key) }

// Put implements Store.
func (s *S3) Put(ctx context.Context, key string, body io.Reader) error {
	if err := validKey(key); err != nil {
		return err
	}
	rs, size, cleanup, err := seekable(body)
	if err != nil {
		return fmt.Errorf("put %s: %w", s.URL(key), err)
	}
	defer cleanup()
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(s.full(key)),
		Body:          rs,
		ContentLength: aws.Int64(size),
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", s.URL(key), err)
	}
	return nil
}

// seekable returns body as a ReadSeeker with its size: the SDK signs the payload and may retry,
// both of which need to rewind.
func seekable(body io.Reader) (io.ReadSeeker, int64, func(), error) {
	switch b := body.(type) {
	case *bytes.Reader:
		return b, b.Size(), func() {}, nil
	case *bytes.Buffer:
		r := bytes.NewReader(b.Bytes())
		return r, r.Size(), func() {}, nil
	case *strings.Reader:
		return b, b.Size(), func() {}, nil
	}
	head := make([]byte, spoolLimit+1)
	n, err := io.ReadFull(body, head)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		r := bytes.NewReader(head[:n])
		return r, r.Size(), func() {}, nil
	}
	if err != nil {
		return nil, 0, nil, err
	}
	f, err := os.CreateTemp("", "recstream-put-*")
	if err != nil {
		return nil, 0, nil, err
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	if _, err := f.Write(head[:n]); err != nil {
		cleanup()
		return nil, 0, nil, err
	}
	size, err := io.Copy(f, body)
	if err != nil {
		cleanup()
		return nil, 0, nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		cleanup()
		return nil, 0, nil, err
	}
	return f, size + int64(n), cleanup, nil
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := validKey(key); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.full(key))})
	if err != nil {
		var nsk *types.NoSuchKey
		var nf *types.NotFound
		if errors.As(err, &nsk) || errors.As(err, &nf) {
			return nil, fmt.Errorf("get %s: %w", s.URL(key), ErrNotExist)
		}
		return nil, fmt.Errorf("get %s: %w", s.URL(key), err)
	}
	return out.Body, nil
}

// List implements Store, following continuation tokens.
func (s *S3) List(ctx context.Context, prefix string) ([]Object, error) {
	full := s.full(prefix)
	if prefix == "" && s.prefix != "" {
		full = s.prefix + "/"
	}
	var out []Object
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(full)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", s.URL(prefix), err)
		}
		for _, o := range page.Contents {
			k := aws.ToString(o.Key)
			if s.prefix != "" {
				k = strings.TrimPrefix(k, s.prefix+"/")
			}
			obj := Object{Key: k, Size: aws.ToInt64(o.Size)}
			if o.LastModified != nil {
				obj.Modified = *o.LastModified
			}
			out = append(out, obj)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := validKey(key); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.full(key))})
	if err != nil {
		return fmt.Errorf("delete %s: %w", s.URL(key), err)
	}
	return nil
}
