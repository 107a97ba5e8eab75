package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// tmpPrefix marks in-flight writes; List skips them and they never collide with real keys
// because validKey forbids nothing here, so the prefix is chosen to be unlikely in real names.
const tmpPrefix = ".recstream-tmp-"

// Dir is a Store in a local directory. Objects are plain files under root/<key>.
type Dir struct {
	root string
}

// NewDir returns a directory store rooted at dir, creating it if needed.
func NewDir(dir string) (*Dir, error) {
	if dir == "" {
		return nil, errors.New("directory store: empty path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("directory store %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("directory store: %w", err)
	}
	return &Dir{root: abs}, nil
}

func (d *Dir) path(key string) string { return filepath.Join(d.root, filepath.FromSlash(key)) }

// URL implements Store.
func (d *Dir) URL(key string) string { return "file://" + filepath.ToSlash(d.path(key)) }

// Put implements Store: the body goes to a temporary file in the target directory, is fsynced,
// then renamed over the key, so readers see the old or the new file, never a torn one.
func (d *Dir) Put(ctx context.Context, key string, body io.Reader) error {
	if err := validKey(key); err != nil {
		return err
	}
	dst := d.path(key)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("put %s: %w", d.URL(key), err)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("put %s: %w", d.URL(key), err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, ctxReader{ctx, body}); err != nil {
		return fmt.Errorf("put %s: %w", d.URL(key), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("put %s: sync: %w", d.URL(key), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("put %s: %w", d.URL(key), err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("put %s: %w", d.URL(key), err)
	}
	ok = true
	// Make the rename itself durable: a checkpoint may follow this write.
	if dirf, err := os.Open(filepath.Dir(dst)); err == nil {
		_ = dirf.Sync()
		dirf.Close()
	}
	return nil
}

// Get implements Store.
func (d *Dir) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := validKey(key); err != nil {
		return nil, err
	}
	f, err := os.Open(d.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get %s: %w", d.URL(key), ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", d.URL(key), err)
	}
	if st, err := f.Stat(); err == nil && st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("get %s: %w", d.URL(key), ErrNotExist)
	}
	return f, nil
}

// List implements Store.
func (d *Dir) List(ctx context.Context, prefix string) ([]Object, error) {
	// Walk only the deepest directory the prefix names.
	start := d.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = d.path(prefix[:i])
	}
	var out []Object
	err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), tmpPrefix) {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) { // removed while listing
				return nil
			}
			return err
		}
		out = append(out, Object{Key: key, Size: info.Size(), Modified: info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", d.URL(prefix), err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Store. Empty parent directories are removed too, so a deleted partition
// does not linger as an empty folder.
func (d *Dir) Delete(ctx context.Context, key string) error {
	if err := validKey(key); err != nil {
		return err
	}
	err := os.Remove(d.path(key))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", d.URL(key), err)
	}
	for dir := filepath.Dir(d.path(key)); dir != d.root && strings.HasPrefix(dir, d.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil { // not empty (or gone): stop
			break
		}
	}
	return nil
}

// ctxReader stops a long copy when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
