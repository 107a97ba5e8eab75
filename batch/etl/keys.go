package etl

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/recstream/recstream/batch/dataset"
)

// The objects a run writes besides the manifest, all under dataset.Prefix (see the layout in
// package dataset). The names carry the run id so that cleanup can tell a dead run's files
// from a live one's without reading anything.

// dataFileKey is the key of file seq of customer's partition written by shard i of n of run
// runID: <prefix>/customerNumber=<N>/part-<run>_s<i>of<n>_<seq>.snappy.parquet.
func dataFileKey(customer int, runID string, shard, shards, seq int) string {
	return fmt.Sprintf("%s/%s=%d/part-%s_s%dof%d_%05d.snappy.parquet", dataset.Prefix, dataset.PartitionColumn, customer, runID, shard, shards, seq)
}

// fileRunID extracts <run> from .../part-<run>_s<i>of<n>_<seq>.snappy.parquet ("" if the name
// is not ours: foreign files are left alone).
func fileRunID(key string) string {
	name := key[strings.LastIndexByte(key, '/')+1:]
	if !strings.HasPrefix(name, "part-") || !strings.HasSuffix(name, ".snappy.parquet") {
		return ""
	}
	name = strings.TrimPrefix(name, "part-")
	i := strings.IndexByte(name, '_')
	if i <= 0 {
		return ""
	}
	return name[:i]
}

// runsRoot holds the staging objects of every run: _runs/<run>/shard-<i>-of-<n>.{started,json}.
const runsRoot = dataset.Prefix + "/_runs/"

// runsPrefix is where run runID keeps its markers and shard manifests until it publishes.
func runsPrefix(runID string) string { return runsRoot + runID + "/" }

// shardName is "shard-<i>-of-<n>", the base name of a shard's marker and manifest.
func shardName(shard, shards int) string {
	return "shard-" + strconv.Itoa(shard) + "-of-" + strconv.Itoa(shards)
}

// lockHolderKey is where the holder of MySQL lock name records who it is.
func lockHolderKey(lock string) string { return dataset.Prefix + "/_locks/" + lock + ".json" }
