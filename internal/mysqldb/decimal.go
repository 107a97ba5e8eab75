package mysqldb

import (
	"errors"
	"fmt"
	"strconv"
)

// MaxDecimal2 is the largest DECIMAL(10,2) value in hundredths: 99,999,999.99.
const MaxDecimal2 = 9_999_999_999

// ErrDecimal is wrapped by ParseDecimal2's errors.
var ErrDecimal = errors.New("not a DECIMAL(10,2)")

// ParseDecimal2 parses a DECIMAL(10,2) text value ("21000.00", "-5", "3.5"), as MySQL sends
// it and the classicmodels CSVs hold it, into hundredths. Money stays exact this way: the
// seed checks CSV values with it and the ETL turns the source's prices into the dataset's
// unscaled decimals.
func ParseDecimal2(s string) (int64, error) {
	neg := false
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		neg = s[i] == '-'
		i++
	}
	var v int64
	digits, frac := 0, -1
	for ; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '.' && frac < 0:
			frac = 0
		case ch >= '0' && ch <= '9':
			if frac >= 0 {
				if frac == 2 {
					return 0, fmt.Errorf("%w: %q has more than 2 decimals", ErrDecimal, clip(s))
				}
				frac++
			}
			digits++
			v = v*10 + int64(ch-'0')
			if v > MaxDecimal2*10 {
				return 0, fmt.Errorf("%w: %q out of range", ErrDecimal, clip(s))
			}
		default:
			return 0, fmt.Errorf("%w: %q", ErrDecimal, clip(s))
		}
	}
	if digits == 0 {
		return 0, fmt.Errorf("%w: %q", ErrDecimal, clip(s))
	}
	for f := max(frac, 0); f < 2; f++ {
		v *= 10
	}
	if v > MaxDecimal2 {
		return 0, fmt.Errorf("%w: %q out of range", ErrDecimal, clip(s))
	}
	if neg {
		v = -v
	}
	return v, nil
}

// FormatDecimal2 formats hundredths as DECIMAL(10,2) text: 2100000 → "21000.00".
func FormatDecimal2(v int64) string {
	neg := v < 0
	if neg {
		v = -v
	}
	s := strconv.FormatInt(v/100, 10) + "." + strconv.FormatInt(100+v%100, 10)[1:]
	if neg {
		return "-" + s
	}
	return s
}

// clip shortens a value quoted in an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
