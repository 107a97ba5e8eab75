package train_test

import (
	"strings"
	"testing"

	"github.com/recstream/recstream/inference"
	"github.com/recstream/recstream/inference/train"
	"github.com/recstream/recstream/inference/train/traintest"
)

func TestReadLabCSV(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty file"},
		{"missing column", "city,country\n", `no column "customernumber"`},
		{"bad number", "customernumber,city,country,creditlimit,productcode,productline,productscale,quantityinstock,buyprice,msrp,productrating\n1,a,b,,S1,l,1:10,x,1,2,3\n", "line 2: column quantityinstock"},
		{"null city", "customernumber,city,country,creditlimit,productcode,productline,productscale,quantityinstock,buyprice,msrp,productrating\n1,,b,,S1,l,1:10,1,1,2,3\n", "line 2: column city: empty"},
		{"rating", "customernumber,city,country,creditlimit,productcode,productline,productscale,quantityinstock,buyprice,msrp,productrating\n1,a,b,,S1,l,1:10,1,1,2,0\n", "outside [1, 5]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := train.ReadLabCSV(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	ex := traintest.LabExamples(t)
	// First data row of the lab file: "London",,"WA1 1DP","UK","43300.00","S24_2887",...,"5","489"
	want := train.Example{CustomerNumber: 489, User: inference.UserFeatures{City: "London", Country: "UK", CreditLimit: 43300}, ProductCode: "S24_2887",
		Item: inference.ItemFeatures{ProductLine: "Classic Cars", ProductScale: "1:24", QuantityInStock: 1452, BuyPrice: 72.82, MSRP: 117.44}, Rating: 5}
	if ex[0] != want {
		t.Fatalf("first row = %+v, want %+v", ex[0], want)
	}
}

func FuzzReadLabCSV(f *testing.F) {
	f.Add("customernumber,city,country,creditlimit,productcode,productline,productscale,quantityinstock,buyprice,msrp,productrating\n\"1\",\"a\",\"b\",,S1,l,1:10,1,1,2,3\n")
	f.Add("city\n\"x")
	f.Fuzz(func(t *testing.T, s string) {
		ex, err := train.ReadLabCSV(strings.NewReader(s))
		if err == nil {
			for _, e := range ex {
				if !(e.Rating >= 1 && e.Rating <= 5) {
					t.Fatalf("accepted rating %g", e.Rating)
				}
			}
		}
	})
}

// TestReadLabCSVNullRule: the lab reader follows the project's one CSV NULL rule (package
// csvio): only an empty unquoted field is NULL; a quoted "" is an empty string.
func TestReadLabCSVNullRule(t *testing.T) {
	const head = "customernumber,city,country,creditlimit,productcode,productline,productscale,quantityinstock,buyprice,msrp,productrating\n"
	ex, err := train.ReadLabCSV(strings.NewReader(head + `"1","a","b",,"S1","l","1:10","1","1","2","3"` + "\r\n\r\n" + `"2","a","b","5.50","S1","l","1:10","1","1","2","4"` + "\n\n"))
	if err != nil || len(ex) != 2 || ex[0].User.CreditLimit != 0 || ex[1].User.CreditLimit != 5.5 {
		t.Fatalf("got %+v, %v; want a NULL creditlimit read as 0 and blank lines skipped", ex, err)
	}
	for _, tc := range []struct{ name, row, want string }{
		{"quoted empty is not NULL", `"1","a","b","","S1","l","1:10","1","1","2","3"`, `line 2: column creditlimit: "" is not a finite number`},
		{"quoted empty string", `"1","","b",,"S1","l","1:10","1","1","2","3"`, "line 2: column city: empty"},
		{"field count", `"1","a","b",,"S1"`, "line 2: wrong number of fields: got 5, header has 11"},
		{"bad quoting", `"1","a"x,"b",,"S1","l","1:10","1","1","2","3"`, `training csv: line 2: unexpected character after closing "`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := train.ReadLabCSV(strings.NewReader(head + tc.row + "\n"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
