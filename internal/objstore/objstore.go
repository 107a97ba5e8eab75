// Package objstore is the object storage every recstream job writes to and reads from: one small
// interface with two real backends, S3 (AWS S3 or any S3-compatible gateway) and a local
// directory (file:// URLs), so the batch jobs also run with no S3 at all.
//
// Keys are slash-separated and relative to the store's root (bucket + prefix, or directory).
// Writes are atomic in both backends: a reader sees the previous object or the new one, never a
// partial one.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// ErrNotExist is returned (wrapped) by Get for a key that has no object.
var ErrNotExist = errors.New("object does not exist")

// Object describes one stored object.
type Object struct {
	Key      string // relative to the store's root
	Size     int64
	Modified time.Time
}

// Store is object storage. Implementations are safe for concurrent use.
type Store interface {
	// Put writes body to key atomically, replacing any object already there.
	Put(ctx context.Context, key string, body io.Reader) error
	// Get opens key for reading; the caller closes the reader. A missing key gives ErrNotExist.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// List returns the objects whose key starts with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// URL names the object key (for logs and manifests), e.g. s3://bucket/prefix/key.
	URL(key string) string
}

// Open returns the store for a location URL: "s3://bucket[/prefix]" (client required) or
// "file:///abs/dir". A bare absolute or relative path is taken as a directory.
func Open(location string, client *s3.Client) (Store, error) {
	u, err := url.Parse(location)
	if err != nil {
		return nil, fmt.Errorf("object store location %q: %w", location, err)
	}
	switch u.Scheme {
	case "s3":
		if client == nil {
			return nil, fmt.Errorf("object store location %q: no S3 client configured", location)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("object store location %q: missing bucket", location)
		}
		return NewS3(client, u.Host, strings.Trim(u.Path, "/"))
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("object store location %q: file URLs take an absolute path (file:///dir)", location)
		}
		return NewDir(u.Path)
	case "":
		return NewDir(location)
	default:
		return nil, fmt.Errorf("object store location %q: unsupported scheme %q (want s3 or file)", location, u.Scheme)
	}
}

// Join joins key parts with "/" the way object keys are written (no leading slash).
func Join(parts ...string) string {
	return strings.TrimPrefix(path.Join(parts...), "/")
}

// ReadAll reads a whole object; small objects only (manifests, pointers, scalers).
func ReadAll(ctx context.Context, s Store, key string) ([]byte, error) {
	r, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.URL(key), err)
	}
	return b, nil
}

func validKey(key string) error {
	if key == "" || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return fmt.Errorf("invalid object key %q", key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("invalid object key %q", key)
		}
	}
	return nil
}
