package inference

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
)

// The weights file, model/best_model.safetensors: both towers as a PyTorch nn.Sequential
// state_dict in the safetensors format. The trainer writes it with EncodeSafetensors and
// LoadModel reads it with DecodeSafetensors.

// TensorNames lists the safetensors tensors of both towers in the file's order (sorted); the
// model card records them.
func TensorNames() []string {
	var names []string
	for _, side := range []string{"item", "user"} {
		for _, idx := range []string{"0", "2", "4"} {
			names = append(names, side+"."+idx+".bias", side+"."+idx+".weight")
		}
	}
	slices.Sort(names)
	return names
}

// towerTensors maps tensor names to the tower's slices and shapes.
func towerTensors(side string, t *Tower) map[string]tensorRef {
	m := map[string]tensorRef{}
	for l, idx := range []string{"0", "2", "4"} {
		d := &t.Layers[l]
		m[side+"."+idx+".weight"] = tensorRef{data: d.W, shape: []int{d.Out, d.In}}
		m[side+"."+idx+".bias"] = tensorRef{data: d.B, shape: []int{d.Out}}
	}
	return m
}

type tensorRef struct {
	data  []float32
	shape []int
}

type stHeaderEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// EncodeSafetensors writes both towers in the safetensors format: an 8-byte little-endian
// header length, a JSON header {name: {dtype: "F32", shape, data_offsets}} padded with spaces
// to a multiple of 8 bytes, then the tensors' little-endian float32 data in name order.
func EncodeSafetensors(user, item *Tower) []byte {
	all := towerTensors("user", user)
	for k, v := range towerTensors("item", item) {
		all[k] = v
	}
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int64
	for _, name := range TensorNames() {
		t := all[name]
		n := int64(len(t.data)) * 4
		header[name] = stHeaderEntry{DType: "F32", Shape: t.shape, DataOffsets: [2]int64{off, off + n}}
		off += n
	}
	hj, _ := json.Marshal(header) // map keys are sorted: the bytes are deterministic
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	out := make([]byte, 8, 8+len(hj)+int(off))
	binary.LittleEndian.PutUint64(out, uint64(len(hj)))
	out = append(out, hj...)
	for _, name := range TensorNames() {
		for _, v := range all[name].data {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	}
	return out
}

// maxHeader bounds the safetensors JSON header (the format's own limit is 100 MB).
const maxHeader = 100 << 20

// DecodeSafetensors reads towers with the given input widths from a safetensors file. Every
// expected tensor must be present with dtype F32 and the expected shape, and no other tensor
// may be; the error names the first mismatch.
func DecodeSafetensors(b []byte, userIn, itemIn int) (user, item *Tower, err error) {
	if len(b) < 8 {
		return nil, nil, fmt.Errorf("safetensors: %d bytes, too short for the header length", len(b))
	}
	hl := binary.LittleEndian.Uint64(b[:8])
	if hl > maxHeader || hl > uint64(len(b)-8) {
		return nil, nil, fmt.Errorf("safetensors: header length %d exceeds the file (%d bytes)", hl, len(b))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+hl], &raw); err != nil {
		return nil, nil, fmt.Errorf("safetensors: header: %w", err)
	}
	data := b[8+hl:]
	user, item = NewTower(userIn), NewTower(itemIn)
	want := towerTensors("user", user)
	for k, v := range towerTensors("item", item) {
		want[k] = v
	}
	for name := range raw {
		if _, ok := want[name]; !ok && name != "__metadata__" {
			return nil, nil, fmt.Errorf("safetensors: unexpected tensor %q", name)
		}
	}
	for _, name := range TensorNames() {
		rm, ok := raw[name]
		if !ok {
			return nil, nil, fmt.Errorf("safetensors: missing tensor %q", name)
		}
		var e stHeaderEntry
		if err := json.Unmarshal(rm, &e); err != nil {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
		}
		ref := want[name]
		if e.DType != "F32" {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: dtype %q, want F32", name, e.DType)
		}
		if !slices.Equal(e.Shape, ref.shape) {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: shape %v, want %v", name, e.Shape, ref.shape)
		}
		lo, hi := e.DataOffsets[0], e.DataOffsets[1]
		if lo < 0 || hi < lo || hi > int64(len(data)) || hi-lo != int64(len(ref.data))*4 {
			return nil, nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] do not hold %d float32 values in %d data bytes", name, lo, hi, len(ref.data), len(data))
		}
		for i := range ref.data {
			ref.data[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[lo+int64(i)*4:]))
		}
	}
	for _, t := range []*Tower{user, item} {
		for l := range t.Layers {
			for _, v := range append(slices.Clone(t.Layers[l].W), t.Layers[l].B...) {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return nil, nil, fmt.Errorf("safetensors: non-finite weight in layer %d", l)
				}
			}
		}
	}
	return user, item, nil
}
