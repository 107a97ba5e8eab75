package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/snappy"
)

// UserFeatures are the user-tower inputs, taken from the event (the customer need not exist in
// any database).
type UserFeatures struct {
	City        string
	Country     string
	CreditLimit float64
}

// ScoredItem is one recommended product; Score is higher for a better match.
type ScoredItem struct {
	ID    string  `parquet:"id" json:"id"`
	Score float64 `parquet:"score" json:"score"`
}

// SimilarItem is one product near the anchor; Distance is lower for a closer match.
type SimilarItem struct {
	ID       string  `parquet:"id" json:"id"`
	Distance float64 `parquet:"distance" json:"distance"`
}

// Recommendations answers one Recommend call.
type Recommendations struct {
	// ForUser[i] holds the top-k items for users[i], best first.
	ForUser [][]ScoredItem
	// Similar maps an anchor product code to its k nearest items, nearest first. An anchor the
	// model does not know is absent (not an error): its record gets an empty list.
	Similar map[string][]SimilarItem
	// Version names the model/embeddings version that produced every answer of this call.
	Version string
}

// Recommender is what the processor needs from the model; cmd adapts *inference.Service to it.
// One call answers a whole GetRecords batch, so an implementation can make one database round
// trip for the users and one for the anchors. Recommend is called from several shard
// goroutines at once and must be safe for concurrent use. An error means "try again later"
// (PostgreSQL down): the processor retries with backoff and never drops the batch.
type Recommender interface {
	Recommend(ctx context.Context, users []UserFeatures, anchors []string, k int) (Recommendations, error)
}

// Similar is the record's similar_items group, in the lab's shape.
type Similar struct {
	ProductCode  string        `parquet:"product_code" json:"product_code"`
	SimilarItems []SimilarItem `parquet:"similar_items,list" json:"similar_items"`
}

// OutputRecord is one enriched event: every input field, the recommendations in the lab's
// shape, and where it came from in the stream. Its Parquet schema is documented in docs/worker.md.
type OutputRecord struct {
	SessionID        string       `parquet:"session_id" json:"session_id"`
	CustomerNumber   int64        `parquet:"customer_number" json:"customer_number"`
	City             string       `parquet:"city" json:"city"`
	Country          string       `parquet:"country" json:"country"`
	CreditLimit      float64      `parquet:"credit_limit" json:"credit_limit"`
	BrowseHistory    []BrowseItem `parquet:"browse_history,list" json:"browse_history"`
	RecommendedItems []ScoredItem `parquet:"recommended_items,list" json:"recommended_items"`
	SimilarItems     Similar      `parquet:"similar_items" json:"similar_items"`
	ShardID          string       `parquet:"shard_id" json:"shard_id"`
	SequenceNumber   string       `parquet:"sequence_number" json:"sequence_number"`
	// SubSequenceNumber is the event's index in its KPL aggregate; 0 for a plain record.
	SubSequenceNumber int64     `parquet:"sub_sequence_number" json:"sub_sequence_number"`
	ArrivalTime       time.Time `parquet:"arrival_time,timestamp(millisecond:utc)" json:"arrival_time"`
	ModelVersion      string    `parquet:"model_version" json:"model_version"`
}

// encodeObject serialises records (one object) in the configured format.
func encodeObject(format string, recs []OutputRecord) ([]byte, error) {
	var buf bytes.Buffer
	switch format {
	case "jsonl":
		enc := json.NewEncoder(&buf)
		for i := range recs {
			if err := enc.Encode(&recs[i]); err != nil {
				return nil, fmt.Errorf("encode jsonl: %w", err)
			}
		}
	default:
		w := parquet.NewGenericWriter[OutputRecord](&buf, parquet.Compression(&snappy.Codec{}))
		if _, err := w.Write(recs); err != nil {
			return nil, fmt.Errorf("encode parquet: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("encode parquet: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// DecodeObject reads an object written by the worker back into records (tests, tools).
func DecodeObject(format string, b []byte) ([]OutputRecord, error) {
	if format == "jsonl" {
		var out []OutputRecord
		dec := json.NewDecoder(bytes.NewReader(b))
		for dec.More() {
			var r OutputRecord
			if err := dec.Decode(&r); err != nil {
				return nil, fmt.Errorf("decode jsonl: %w", err)
			}
			out = append(out, r)
		}
		return out, nil
	}
	recs, err := parquet.Read[OutputRecord](bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, fmt.Errorf("decode parquet: %w", err)
	}
	return recs, nil
}

// FormatExt is the object-name extension of a format.
func FormatExt(format string) string {
	if format == "jsonl" {
		return "jsonl"
	}
	return "parquet"
}
