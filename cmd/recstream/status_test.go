package main

import (
	"reflect"
	"testing"

	"github.com/recstream/recstream/checkpoint"
)

func TestMergeShards(t *testing.T) {
	for _, tc := range []struct {
		name   string
		leases []checkpoint.Lease
		shards []kinesisShard
		want   []ShardStatus
	}{
		{
			name:   "not leased yet",
			shards: []kinesisShard{{id: "shardId-000000000001"}, {id: "shardId-000000000000"}},
			want:   []ShardStatus{{ShardID: "shardId-000000000000"}, {ShardID: "shardId-000000000001"}},
		},
		{
			name:   "leased and checkpointed",
			leases: []checkpoint.Lease{{ShardID: "shardId-000000000000", Owner: "w1", Counter: 7, Checkpoint: "495"}},
			shards: []kinesisShard{{id: "shardId-000000000000"}},
			want:   []ShardStatus{{ShardID: "shardId-000000000000", Owner: "w1", LeaseCounter: 7, Checkpoint: "495", InLeaseTable: true}},
		},
		{
			name: "split: closed parent, child with parent from the stream",
			leases: []checkpoint.Lease{
				{ShardID: "shardId-000000000000", Checkpoint: checkpoint.ShardEnd, Counter: 12},
			},
			shards: []kinesisShard{{id: "shardId-000000000000", closed: true}, {id: "shardId-000000000001", parent: "shardId-000000000000"}},
			want: []ShardStatus{
				{ShardID: "shardId-000000000000", LeaseCounter: 12, Checkpoint: checkpoint.ShardEnd, Closed: true, InLeaseTable: true},
				{ShardID: "shardId-000000000001", Parent: "shardId-000000000000"},
			},
		},
		{
			name:   "lease of a shard gone from the stream is still shown",
			leases: []checkpoint.Lease{{ShardID: "shardId-000000000009", Checkpoint: checkpoint.ShardEnd}},
			want:   []ShardStatus{{ShardID: "shardId-000000000009", Checkpoint: checkpoint.ShardEnd, Closed: true, InLeaseTable: true}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mergeShards(tc.leases, tc.shards)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
