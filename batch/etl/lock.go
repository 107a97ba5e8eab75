package etl

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/recstream/recstream/batch/dataset"
	"github.com/recstream/recstream/internal/objstore"
)

// LockedError is returned by Job.Run when another run holds the lock for the same dataset and
// shard. Holder says who (MySQL connection, its host, and the run id, host and pid that run
// recorded); cmd maps it to exit code 3.
type LockedError struct {
	Lock   string
	Holder string
}

// Error says which lock is held and by whom.
func (e *LockedError) Error() string {
	return fmt.Sprintf("another batch etl run holds lock %q: %s", e.Lock, e.Holder)
}

// lockHolder is what a run records beside the dataset after taking its lock, so a second run
// can say more than a connection id.
type lockHolder struct {
	ConnectionID int64     `json:"connection_id"`
	RunID        string    `json:"run_id"`
	Host         string    `json:"host"`
	PID          int       `json:"pid"`
	Since        time.Time `json:"since"`
}

// lockNames returns the per-shard run lock and the publish lock for the dataset in store
// exported from database db. MySQL lock names are at most 64 characters.
func lockNames(db, storeURL string, shard, shards int) (run, publish string) {
	h := sha256.Sum256([]byte(db + "\x00" + storeURL))
	base := "recstream_etl_" + hex.EncodeToString(h[:10])
	return base + "_" + strconv.Itoa(shard) + "of" + strconv.Itoa(shards), base + "_publish"
}

// LockName is the MySQL named lock (GET_LOCK) a `batch etl` run of shard i/n holds while it
// runs against database db and the datalake store; operators can ask who holds it with
// SELECT IS_USED_LOCK('<name>').
func LockName(db string, store objstore.Store, shard, shards int) string {
	run, _ := lockNames(db, store.URL(dataset.Prefix), shard, shards)
	return run
}

// getLock takes a MySQL named lock on conn, waiting up to timeout. The server frees it when
// the connection ends, so it never outlives a crashed holder.
func getLock(ctx context.Context, conn *sql.Conn, name string, timeout time.Duration) (bool, error) {
	var got sql.NullInt64
	secs := timeout.Seconds()
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, secs).Scan(&got); err != nil {
		return false, fmt.Errorf("get lock %s: %w", name, err)
	}
	if !got.Valid {
		return false, fmt.Errorf("get lock %s: server returned NULL", name)
	}
	return got.Int64 == 1, nil
}

// releaseLock frees a lock taken by getLock, best effort: the server frees it with the
// connection anyway.
func releaseLock(ctx context.Context, conn *sql.Conn, name string) {
	_, _ = conn.ExecContext(ctx, "DO RELEASE_LOCK(?)", name)
}

// describeHolder says who holds lock name, best effort.
func describeHolder(ctx context.Context, conn *sql.Conn, store objstore.Store, name string) string {
	var id sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?)", name).Scan(&id); err != nil || !id.Valid {
		return "unknown holder (the lock was released meanwhile; retry)"
	}
	parts := []string{"MySQL connection " + strconv.FormatInt(id.Int64, 10)}
	var user, host string
	var secs int64
	err := conn.QueryRowContext(ctx, "SELECT USER, HOST, TIME FROM information_schema.PROCESSLIST WHERE ID = ?", id.Int64).Scan(&user, &host, &secs)
	if err == nil {
		parts = append(parts, fmt.Sprintf("from %s@%s, connected %ds", user, host, secs))
	}
	if b, err := objstore.ReadAll(ctx, store, lockHolderKey(name)); err == nil {
		var h lockHolder
		if json.Unmarshal(b, &h) == nil && h.ConnectionID == id.Int64 {
			parts = append(parts, fmt.Sprintf("run %s on host %s pid %d since %s", h.RunID, h.Host, h.PID, h.Since.Format(time.RFC3339)))
		}
	}
	return strings.Join(parts, ", ")
}

// recordHolder records beside the dataset that this process holds lock name, for
// describeHolder.
func recordHolder(ctx context.Context, conn *sql.Conn, store objstore.Store, name, runID string) error {
	var id int64
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		return fmt.Errorf("connection id: %w", err)
	}
	host, _ := os.Hostname()
	b, _ := json.Marshal(lockHolder{ConnectionID: id, RunID: runID, Host: host, PID: os.Getpid(), Since: time.Now().UTC()})
	if err := store.Put(ctx, lockHolderKey(name), strings.NewReader(string(b))); err != nil {
		return fmt.Errorf("record lock holder: %w", err)
	}
	return nil
}

var errNoDatabase = errors.New("mysql dsn names no database")

// lockNames returns this run's shard lock and the dataset's publish lock, for the database
// conn is connected to.
func (j *Job) lockNames(ctx context.Context, conn *sql.Conn) (string, string, error) {
	var db sql.NullString
	if err := conn.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&db); err != nil {
		return "", "", fmt.Errorf("current database: %w", err)
	}
	if !db.Valid {
		return "", "", errNoDatabase
	}
	run, pub := lockNames(db.String, j.store.URL(dataset.Prefix), j.opts.Shard, j.opts.Shards)
	return run, pub, nil
}
