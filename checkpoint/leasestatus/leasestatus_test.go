package leasestatus

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/recstream/recstream/checkpoint"
)

func TestStatusJoin(t *testing.T) {
	for _, tc := range []struct {
		name   string
		leases []checkpoint.Lease
		shards []StreamShard
		want   []Shard
	}{
		{
			name:   "not leased yet",
			shards: []StreamShard{{ID: "shardId-000000000001"}, {ID: "shardId-000000000000"}},
			want:   []Shard{{ShardID: "shardId-000000000000"}, {ShardID: "shardId-000000000001"}},
		},
		{
			name:   "leased and checkpointed",
			leases: []checkpoint.Lease{{ShardID: "shardId-000000000000", Owner: "w1", Counter: 7, Checkpoint: "495"}},
			shards: []StreamShard{{ID: "shardId-000000000000"}},
			want:   []Shard{{ShardID: "shardId-000000000000", Owner: "w1", LeaseCounter: 7, Checkpoint: "495", InLeaseTable: true}},
		},
		{
			name: "split: closed parent, child with parent from the stream",
			leases: []checkpoint.Lease{
				{ShardID: "shardId-000000000000", Checkpoint: checkpoint.ShardEnd, Counter: 12},
			},
			shards: []StreamShard{{ID: "shardId-000000000000", Closed: true}, {ID: "shardId-000000000001", Parent: "shardId-000000000000"}},
			want: []Shard{
				{ShardID: "shardId-000000000000", LeaseCounter: 12, Checkpoint: checkpoint.ShardEnd, Closed: true, InLeaseTable: true},
				{ShardID: "shardId-000000000001", Parent: "shardId-000000000000"},
			},
		},
		{
			name:   "lease of a shard gone from the stream is still shown",
			leases: []checkpoint.Lease{{ShardID: "shardId-000000000009", Checkpoint: checkpoint.ShardEnd}},
			want:   []Shard{{ShardID: "shardId-000000000009", Checkpoint: checkpoint.ShardEnd, Closed: true, InLeaseTable: true}},
		},
		{
			name: "the leader row and workers' presence rows are not shards",
			leases: []checkpoint.Lease{{ShardID: checkpoint.LeaderRow, Owner: "w1", Counter: 3},
				{ShardID: checkpoint.WorkerRowPrefix + "w2", Owner: "w2", Counter: 1, State: "draining"},
				{ShardID: "shardId-000000000000", Owner: "w1", Counter: 7}},
			want: []Shard{{ShardID: "shardId-000000000000", Owner: "w1", LeaseCounter: 7, InLeaseTable: true}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Join(tc.leases, tc.shards)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func ms(n int64) *int64 { return &n }

func TestStatusLeaseInfoWorkersAndOrder(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	leases := []checkpoint.Lease{
		{ShardID: "shardId-000000000000", Owner: "w-b", Checkpoint: "1", CheckpointTime: now.Add(-3 * time.Second), LeaseTimeout: now.Add(5 * time.Second)},
		{ShardID: "shardId-000000000001", Owner: "w-a", Checkpoint: "2", CheckpointTime: now.Add(-90 * time.Second), LeaseTimeout: now.Add(-time.Second)},
		{ShardID: "shardId-000000000002", Owner: "w-a", Checkpoint: "3"},
		{ShardID: "shardId-000000000003", Checkpoint: checkpoint.ShardEnd, CheckpointTime: now.Add(-time.Hour)},
		{ShardID: "shardId-000000000004"},
	}
	shards := Join(leases, nil)
	AddLeaseInfo(shards, leases, now)
	shards[0].LagMillis, shards[1].LagMillis, shards[2].LagMillis, shards[3].LagMillis = ms(10), ms(5000), nil, ms(0)
	shards[4].LagMillis = ms(7)
	if a := shards[1].CheckpointAgeMillis; a == nil || *a != 90_000 || !shards[1].LeaseStale || shards[0].LeaseStale {
		t.Fatalf("lease info %+v / %+v", shards[0].LeaseInfo, shards[1].LeaseInfo)
	}
	if shards[2].CheckpointAgeMillis != nil {
		t.Fatalf("checkpoint age without a checkpoint time: %v", *shards[2].CheckpointAgeMillis)
	}
	want := []Worker{{Worker: "w-a", Leases: 2, Stale: 1}, {Worker: "w-b", Leases: 1}, {Worker: "", Leases: 1}}
	if got := Workers(shards); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("workers %+v, want %+v (finished shards not counted, unowned last)", got, want)
	}
	order := func() string {
		var ids []string
		for _, s := range shards {
			ids = append(ids, s.ShardID[len(s.ShardID)-1:])
		}
		return strings.Join(ids, "")
	}
	for _, tc := range []struct {
		by   Order
		want string
	}{
		{ByLag, "21043"}, // unknown first, then largest
		{ByAge, "24310"}, // unknown first (2, 4 by id), then oldest
		{ByOwner, "34120"},
		{ByShard, "01234"},
	} {
		sortBy, err := ParseOrder(string(tc.by))
		if err != nil {
			t.Fatal(err)
		}
		Sort(shards, sortBy)
		if got := order(); got != tc.want {
			t.Fatalf("--sort %s: order %s, want %s", tc.by, got, tc.want)
		}
	}
	if _, err := ParseOrder("size"); err == nil {
		t.Fatal("--sort size accepted")
	}
}
