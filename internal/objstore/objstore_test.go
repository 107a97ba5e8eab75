package objstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/internal/stacktest"
)

// backends returns one store per backend, each rooted at a fresh, empty location.
func backends(t *testing.T) map[string]objstore.Store {
	t.Helper()
	dir, err := objstore.Open("file://"+t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]objstore.Store{"dir": dir, "s3": s3Store(t)}
}

func s3Store(t *testing.T) objstore.Store {
	t.Helper()
	return stacktest.S3Store(t, "datalake", "objstore-test-")
}

func get(t *testing.T, s objstore.Store, key string) []byte {
	t.Helper()
	b, err := objstore.ReadAll(context.Background(), s, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b
}

func keys(objs []objstore.Object) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.Key
	}
	return out
}

// TestContract runs the same suite against every backend: the jobs must not care which one
// they write to.
func TestContract(t *testing.T) {
	for name, s := range backends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()

			t.Run("put get overwrite", func(t *testing.T) {
				if err := s.Put(ctx, "a/b.txt", strings.NewReader("one")); err != nil {
					t.Fatal(err)
				}
				if got := string(get(t, s, "a/b.txt")); got != "one" {
					t.Fatalf("got %q, want one", got)
				}
				if err := s.Put(ctx, "a/b.txt", strings.NewReader("two!")); err != nil {
					t.Fatal(err)
				}
				if got := string(get(t, s, "a/b.txt")); got != "two!" {
					t.Fatalf("after overwrite got %q, want two!", got)
				}
			})

			t.Run("missing key", func(t *testing.T) {
				_, err := s.Get(ctx, "no/such/key")
				if !errors.Is(err, objstore.ErrNotExist) {
					t.Fatalf("got %v, want ErrNotExist", err)
				}
			})

			t.Run("hive keys and prefix listing", func(t *testing.T) {
				ks := []string{
					"ratings_ml_training/customerNumber=103/part-1.parquet",
					"ratings_ml_training/customerNumber=1030/part-1.parquet",
					"ratings_ml_training/customerNumber=112/part-1.parquet",
					"ratings_ml_training/_manifest.json",
					"other/x=1/y=2/z",
				}
				for _, k := range ks {
					if err := s.Put(ctx, k, bytes.NewReader([]byte(k))); err != nil {
						t.Fatal(err)
					}
				}
				for _, k := range ks {
					if got := string(get(t, s, k)); got != k {
						t.Fatalf("%s: got %q", k, got)
					}
				}
				objs, err := s.List(ctx, "ratings_ml_training/customerNumber=103/")
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.Join(keys(objs), ","); got != "ratings_ml_training/customerNumber=103/part-1.parquet" {
					t.Fatalf("list with slash prefix: %s", got)
				}
				objs, err = s.List(ctx, "ratings_ml_training/customerNumber=103")
				if err != nil {
					t.Fatal(err)
				}
				want := "ratings_ml_training/customerNumber=103/part-1.parquet,ratings_ml_training/customerNumber=1030/part-1.parquet"
				if got := strings.Join(keys(objs), ","); got != want {
					t.Fatalf("list with partial prefix:\n got %s\nwant %s", got, want)
				}
				objs, err = s.List(ctx, "ratings_ml_training/")
				if err != nil {
					t.Fatal(err)
				}
				if len(objs) != 4 || objs[0].Key != "ratings_ml_training/_manifest.json" {
					t.Fatalf("list sorted: %v", keys(objs))
				}
				if objs[0].Size != int64(len("ratings_ml_training/_manifest.json")) {
					t.Fatalf("size = %d", objs[0].Size)
				}
			})

			t.Run("delete", func(t *testing.T) {
				if err := s.Put(ctx, "del/me", strings.NewReader("x")); err != nil {
					t.Fatal(err)
				}
				if err := s.Delete(ctx, "del/me"); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Get(ctx, "del/me"); !errors.Is(err, objstore.ErrNotExist) {
					t.Fatalf("after delete: %v", err)
				}
				if err := s.Delete(ctx, "del/me"); err != nil {
					t.Fatalf("deleting a missing key: %v", err)
				}
				objs, _ := s.List(ctx, "del/")
				if len(objs) != 0 {
					t.Fatalf("listed after delete: %v", keys(objs))
				}
			})

			t.Run("invalid keys", func(t *testing.T) {
				for _, k := range []string{"", "/abs", "a//b", "a/../b", "dir/"} {
					if err := s.Put(ctx, k, strings.NewReader("x")); err == nil {
						t.Errorf("Put(%q) accepted", k)
					}
				}
			})

			t.Run("64 MiB object", func(t *testing.T) {
				big := make([]byte, 64<<20)
				if _, err := rand.Read(big[:1<<20]); err != nil {
					t.Fatal(err)
				}
				for i := 1 << 20; i < len(big); i += 1 << 20 {
					copy(big[i:], big[:1<<20])
					big[i] ^= byte(i >> 20) // distinct megabytes, so a misplaced chunk is caught
				}
				// A plain io.Reader (not seekable) exercises the spooling path.
				if err := s.Put(ctx, "big/object.bin", io.MultiReader(bytes.NewReader(big))); err != nil {
					t.Fatal(err)
				}
				got := get(t, s, "big/object.bin")
				if !bytes.Equal(got, big) {
					t.Fatalf("64 MiB round trip differs (got %d bytes)", len(got))
				}
			})

			t.Run("atomic overwrite", func(t *testing.T) {
				// Two versions of one key, each a single repeated byte; a reader must only ever
				// see a whole object of one byte value.
				const size = 4 << 20
				a, b := bytes.Repeat([]byte{'a'}, size), bytes.Repeat([]byte{'b'}, size)
				if err := s.Put(ctx, "atomic/obj", bytes.NewReader(a)); err != nil {
					t.Fatal(err)
				}
				var stop atomic.Bool
				var wg sync.WaitGroup
				var reads atomic.Int64
				errc := make(chan error, 1)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						got, err := objstore.ReadAll(ctx, s, "atomic/obj")
						if err != nil {
							errc <- err
							return
						}
						if len(got) != size || (!bytes.Equal(got, a) && !bytes.Equal(got, b)) {
							errc <- errors.New("reader saw a torn object")
							return
						}
						reads.Add(1)
					}
				}()
				for i := 0; i < 6; i++ {
					body := a
					if i%2 == 0 {
						body = b
					}
					if err := s.Put(ctx, "atomic/obj", bytes.NewReader(body)); err != nil {
						t.Fatal(err)
					}
				}
				stacktest.Eventually(t, 30*time.Second, 10*time.Millisecond, func() bool { return reads.Load() >= 3 }, "concurrent reader made no progress")
				stop.Store(true)
				wg.Wait()
				select {
				case err := <-errc:
					t.Fatal(err)
				default:
				}
			})
		})
	}
}

func TestOpen(t *testing.T) {
	for _, tc := range []struct {
		url     string
		wantErr string
	}{
		{"s3://bucket/prefix", "no S3 client"},
		{"s3:///prefix", "no S3 client"},
		{"gs://bucket", "unsupported scheme"},
		{"file://host/dir", "absolute path"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := objstore.Open(tc.url, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Open(%q) = %v, want error containing %q", tc.url, err, tc.wantErr)
			}
		})
	}
	s, err := objstore.Open("file://"+t.TempDir()+"/sub", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.URL("k=1/x"), "file://") || !strings.HasSuffix(s.URL("k=1/x"), "/sub/k=1/x") {
		t.Fatalf("URL = %s", s.URL("k=1/x"))
	}
}
