package inference

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestOneHotEncoder(t *testing.T) {
	// Categories are normalised (strip + lower case) and sorted; NULL ("") is not a category.
	ohe, err := FitOneHot([]string{"city", "country"}, [][]string{
		{" Nantes", "France"}, {"london ", "UK"}, {"NANTES", "france"}, {"", "USA"}, {"Århus", "Denmark"},
	})
	if err != nil {
		t.Fatal(err)
	}
	wantCats := [][]string{{"london", "nantes", "århus"}, {"denmark", "france", "uk", "usa"}}
	for c := range wantCats {
		if !slices.Equal(ohe.Categories[c], wantCats[c]) {
			t.Fatalf("categories[%d] = %q, want %q", c, ohe.Categories[c], wantCats[c])
		}
	}
	tests := []struct {
		name string
		in   []string
		want []float32
	}{
		{"known both", []string{"Nantes", "France"}, []float32{0, 1, 0, 0, 1, 0, 0}},
		{"case and space", []string{"  LONDON\t", "uk"}, []float32{1, 0, 0, 0, 0, 1, 0}},
		{"non-ascii", []string{"århus", "Denmark"}, []float32{0, 0, 1, 1, 0, 0, 0}},
		{"unknown city is all zeros", []string{"Paris", "USA"}, []float32{0, 0, 0, 0, 0, 0, 1}},
		{"null city", []string{"", "France"}, []float32{0, 0, 0, 0, 1, 0, 0}},
		{"all unknown", []string{"x", "y"}, []float32{0, 0, 0, 0, 0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := make([]float32, ohe.Width())
			ohe.Encode(got, tc.in)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Encode(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestStandardScaler(t *testing.T) {
	// Population standard deviation; a constant column gets scale 1 (scikit-learn).
	s := FitStandard([]string{"a", "b"}, [][]float64{{1, 7}, {2, 7}, {3, 7}, {6, 7}})
	// a: mean 3, var (4+1+0+9)/4 = 3.5
	if s.Mean[0] != 3 || s.Scale[0] != 1.8708286933869707 || s.Mean[1] != 7 || s.Scale[1] != 1 {
		t.Fatalf("fit = mean %v scale %v", s.Mean, s.Scale)
	}
	got := make([]float32, 2)
	s.Encode(got, []float64{6, 9})
	if want := []float32{float32(3 / 1.8708286933869707), 2}; !slices.Equal(got, want) {
		t.Fatalf("Encode = %v, want %v", got, want)
	}
}

func TestUserEncoding(t *testing.T) {
	ohe := &OneHotEncoder{Features: UserCategorical, Categories: [][]string{{"london", "nantes"}, {"france", "uk"}, {"nantes|france|100000.00"}}}
	std := &StandardScaler{Features: UserNumeric, Mean: []float64{50000}, Scale: []float64{25000}}
	enc, err := NewEncoder("user", ohe, std, UserCategorical, UserNumeric)
	if err != nil {
		t.Fatal(err)
	}
	got := enc.EncodeUsers([]UserFeatures{
		{City: " Nantes", Country: "FRANCE", CreditLimit: 100000},
		// A US customer with a NULL state: state is not an input, so nothing changes.
		{City: "NYC", Country: "USA", CreditLimit: 0},
		// A known city with another credit limit: another profile.
		{City: "Nantes", Country: "France", CreditLimit: 100000.01},
	})
	want := []float32{0, 1, 1, 0, 1, 2, 0, 0, 0, 0, 0, -2, 0, 1, 1, 0, 0, float32((100000.01 - 50000) / 25000)}
	if !slices.Equal(got, want) {
		t.Fatalf("EncodeUsers = %v, want %v", got, want)
	}
	// A version published before the profile category encodes city and country only.
	legacy := &OneHotEncoder{Features: legacyUserCategorical, Categories: [][]string{{"london", "nantes"}, {"france", "uk"}}}
	enc, err = NewEncoder("user", legacy, std, legacyUserCategorical, UserNumeric)
	if err != nil {
		t.Fatal(err)
	}
	if got := enc.EncodeUsers([]UserFeatures{{City: "Nantes", Country: "France", CreditLimit: 100000}}); !slices.Equal(got, []float32{0, 1, 1, 0, 2}) {
		t.Fatalf("legacy EncodeUsers = %v", got)
	}
}

func TestProfileKey(t *testing.T) {
	for _, tc := range []struct {
		u    UserFeatures
		want string
	}{
		{UserFeatures{City: " Nantes ", Country: "France", CreditLimit: 21000}, "nantes|france|21000.00"},
		{UserFeatures{City: "NYC", Country: "USA", CreditLimit: 0.5}, "nyc|usa|0.50"},
		{UserFeatures{City: "NYC", Country: "USA", CreditLimit: 1e10}, ""},
		{UserFeatures{City: "NYC", Country: "USA", CreditLimit: math.NaN()}, ""},
		{UserFeatures{City: "NYC", Country: "USA", CreditLimit: math.Inf(-1)}, ""},
	} {
		if got := ProfileKey(tc.u); got != tc.want {
			t.Errorf("ProfileKey(%+v) = %q, want %q", tc.u, got, tc.want)
		}
	}
}

func TestEncoderRejectsBadScalers(t *testing.T) {
	tests := []struct {
		name string
		ohe  *OneHotEncoder
		std  *StandardScaler
		want string
	}{
		{"unnormalised category", &OneHotEncoder{Features: UserCategorical, Categories: [][]string{{"London"}, {"uk"}, {"p"}}}, &StandardScaler{Features: UserNumeric, Mean: []float64{0}, Scale: []float64{1}}, `category 0 "London" is not normalised`},
		{"duplicate category", &OneHotEncoder{Features: UserCategorical, Categories: [][]string{{"a", "a"}, {"uk"}, {"p"}}}, &StandardScaler{Features: UserNumeric, Mean: []float64{0}, Scale: []float64{1}}, `duplicate category "a"`},
		{"wrong features", &OneHotEncoder{Features: []string{"country", "city", "profile"}, Categories: [][]string{{"a"}, {"b"}, {"p"}}}, &StandardScaler{Features: UserNumeric, Mean: []float64{0}, Scale: []float64{1}}, `features ["country" "city" "profile"], want ["city" "country" "profile"]`},
		{"zero scale", &OneHotEncoder{Features: UserCategorical, Categories: [][]string{{"a"}, {"b"}, {"p"}}}, &StandardScaler{Features: UserNumeric, Mean: []float64{0}, Scale: []float64{0}}, "scale must be finite and > 0"},
		{"short mean", &OneHotEncoder{Features: UserCategorical, Categories: [][]string{{"a"}, {"b"}, {"p"}}}, &StandardScaler{Features: UserNumeric, Mean: nil, Scale: []float64{1}}, "1 features, 0 means"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewEncoder("user", tc.ohe, tc.std, UserCategorical, UserNumeric)
			if err == nil || !contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestProfilesAreCapped: beyond the cap (train.MaxProfiles) the profiles with the most ratings
// are kept.
func TestProfilesAreCapped(t *testing.T) {
	e, err := FitOneHot([]string{"profile"}, [][]string{{"a"}, {"b"}, {"b"}, {"c"}, {"c"}, {"c"}, {"d"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.CapCategories(0, [][]string{{"a"}, {"b"}, {"b"}, {"c"}, {"c"}, {"c"}, {"d"}}, 2); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(e.Categories[0]); got != "[b c]" {
		t.Fatalf("kept %s, want [b c]", got)
	}
	dst := make([]float32, 2)
	e.Encode(dst, []string{"a"})
	if dst[0] != 0 || dst[1] != 0 {
		t.Fatalf("a dropped profile encodes as %v, want zeros", dst)
	}
}
