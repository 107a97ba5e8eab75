// Package icespec reads an Iceberg table the way the specification describes it, without
// iceberg-go: metadata.json → the current snapshot's manifest list (Avro) → manifests (Avro)
// → live data files. Tests use it as a reader independent of the writer's library, so a
// mistake the library makes on both sides cannot hide.
package icespec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/hamba/avro/v2/ocf"
)

// DataFile is one live data file of the current snapshot.
type DataFile struct {
	Path    string
	Records int64
	// Partition is the file's partition tuple as the manifest records it (field name → value).
	Partition map[string]any
}

// Snapshot is the part of a snapshot entry of metadata.json the reader needs.
type Snapshot struct {
	ID           int64             `json:"snapshot-id"`
	Parent       *int64            `json:"parent-snapshot-id"`
	TimestampMs  int64             `json:"timestamp-ms"`
	ManifestList string            `json:"manifest-list"`
	Summary      map[string]string `json:"summary"`
}

// Metadata is the part of metadata.json the reader needs.
type Metadata struct {
	FormatVersion int        `json:"format-version"`
	Location      string     `json:"location"`
	Current       *int64     `json:"current-snapshot-id"`
	Snapshots     []Snapshot `json:"snapshots"`
}

// CurrentSnapshot returns the current snapshot, or nil for a table without one.
func (m Metadata) CurrentSnapshot() *Snapshot {
	if m.Current == nil || *m.Current == -1 {
		return nil
	}
	for i := range m.Snapshots {
		if m.Snapshots[i].ID == *m.Current {
			return &m.Snapshots[i]
		}
	}
	return nil
}

// ReadFunc reads a whole file by its location.
type ReadFunc func(location string) ([]byte, error)

// ParseMetadata decodes a metadata.json.
func ParseMetadata(b []byte) (Metadata, error) {
	var m Metadata
	if err := json.Unmarshal(b, &m); err != nil {
		return Metadata{}, fmt.Errorf("metadata.json: %w", err)
	}
	return m, nil
}

// LiveFiles lists the data files of the current snapshot: manifests of content 0 (data) in
// its manifest list, entries whose status is not 2 (deleted) and whose data_file.content is
// 0 (data). Sorted by path.
func LiveFiles(read ReadFunc, m Metadata) ([]DataFile, error) {
	return LiveFilesAt(read, m.CurrentSnapshot())
}

// LiveFilesAt lists the data files of snapshot s (nil: none), as LiveFiles does.
func LiveFilesAt(read ReadFunc, s *Snapshot) ([]DataFile, error) {
	if s == nil {
		return nil, nil
	}
	list, err := readAvro(read, s.ManifestList)
	if err != nil {
		return nil, fmt.Errorf("manifest list: %w", err)
	}
	var out []DataFile
	for _, mf := range list {
		path, _ := mf["manifest_path"].(string)
		if content, ok := asInt(mf["content"]); ok && content != 0 {
			continue // a delete manifest
		}
		entries, err := readAvro(read, path)
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", path, err)
		}
		for _, e := range entries {
			status, _ := asInt(e["status"])
			if status == 2 {
				continue
			}
			df, ok := e["data_file"].(map[string]any)
			if !ok {
				return nil, fmt.Errorf("manifest %s: entry without data_file", path)
			}
			if c, ok := asInt(df["content"]); ok && c != 0 {
				continue
			}
			p, _ := df["file_path"].(string)
			n, _ := asInt(df["record_count"])
			part, _ := df["partition"].(map[string]any)
			out = append(out, DataFile{Path: p, Records: n, Partition: part})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func readAvro(read ReadFunc, location string) ([]map[string]any, error) {
	b, err := read(location)
	if err != nil {
		return nil, err
	}
	dec, err := ocf.NewDecoder(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for dec.HasNext() {
		var rec map[string]any
		if err := dec.Decode(&rec); err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, dec.Error()
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}
