package deploy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Expression is a parsed EventBridge schedule expression: cron(...) or rate(...).
type Expression struct {
	Raw  string
	Rate time.Duration // rate(...) only; 0 for cron

	// cron fields, each a set indexed by value (year is offset by 1970)
	minute, hour, dom, month, dow, year []bool
	anyDOM, anyDOW                      bool
}

// IsCron reports whether e is a cron(...) expression.
func (e Expression) IsCron() bool { return e.Rate == 0 }

type cronField struct {
	name     string
	min, max int
	names    map[string]int
}

var (
	monthNames = map[string]int{"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6, "JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12}
	dowNames   = map[string]int{"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
	cronFields = []cronField{
		{name: "minutes", min: 0, max: 59},
		{name: "hours", min: 0, max: 23},
		{name: "day-of-month", min: 1, max: 31},
		{name: "month", min: 1, max: 12, names: monthNames},
		{name: "day-of-week", min: 1, max: 7, names: dowNames},
		{name: "year", min: 1970, max: 2199},
	}
)

// ParseExpression parses an EventBridge schedule expression as EventBridge Scheduler and rules
// accept it: rate(N unit) with unit minute(s)/hour(s)/day(s) (singular exactly when N = 1), or
// cron(minutes hours day-of-month month day-of-week year) with numbers, names (JAN, MON),
// "*", ranges, lists and steps, and "?" in exactly one of day-of-month and day-of-week. The
// L, W and # forms are rejected as unsupported by this checker (the deployment files do not
// use them).
func ParseExpression(s string) (Expression, error) {
	switch {
	case strings.HasPrefix(s, "rate(") && strings.HasSuffix(s, ")"):
		return parseRate(s)
	case strings.HasPrefix(s, "cron(") && strings.HasSuffix(s, ")"):
		return parseCron(s)
	}
	return Expression{}, fmt.Errorf("%q: want cron(...) or rate(...)", s)
}

func parseRate(s string) (Expression, error) {
	parts := strings.Fields(s[len("rate(") : len(s)-1])
	if len(parts) != 2 {
		return Expression{}, fmt.Errorf("%q: want rate(<value> <unit>)", s)
	}
	n, err := strconv.Atoi(parts[0])
	if err != nil || n < 1 {
		return Expression{}, fmt.Errorf("%q: value must be a positive integer, got %q", s, parts[0])
	}
	unit := map[string]time.Duration{"minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}
	u := parts[1]
	base := strings.TrimSuffix(u, "s")
	d, ok := unit[base]
	if !ok {
		return Expression{}, fmt.Errorf("%q: unit must be minute(s), hour(s) or day(s), got %q", s, u)
	}
	if (n == 1) != (u == base) {
		return Expression{}, fmt.Errorf("%q: unit must be singular exactly when the value is 1", s)
	}
	return Expression{Raw: s, Rate: time.Duration(n) * d}, nil
}

func parseCron(s string) (Expression, error) {
	parts := strings.Fields(s[len("cron(") : len(s)-1])
	if len(parts) != 6 {
		return Expression{}, fmt.Errorf("%q: want 6 fields (minutes hours day-of-month month day-of-week year), got %d", s, len(parts))
	}
	e := Expression{Raw: s}
	sets := make([][]bool, 6)
	for i, f := range cronFields {
		if parts[i] == "?" {
			if i != 2 && i != 4 {
				return Expression{}, fmt.Errorf("%q: %s: \"?\" is allowed only in day-of-month and day-of-week", s, f.name)
			}
			continue
		}
		set, err := parseCronField(parts[i], f)
		if err != nil {
			return Expression{}, fmt.Errorf("%q: %s: %w", s, f.name, err)
		}
		sets[i] = set
	}
	e.anyDOM, e.anyDOW = parts[2] == "?", parts[4] == "?"
	if e.anyDOM == e.anyDOW {
		return Expression{}, fmt.Errorf("%q: exactly one of day-of-month and day-of-week must be \"?\"", s)
	}
	e.minute, e.hour, e.dom, e.month, e.dow, e.year = sets[0], sets[1], sets[2], sets[3], sets[4], sets[5]
	return e, nil
}

func parseCronField(s string, f cronField) ([]bool, error) {
	set := make([]bool, f.max-f.min+1)
	for _, item := range strings.Split(s, ",") {
		if item == "" {
			return nil, errors.New("empty list item")
		}
		rng, step := item, 1
		if i := strings.IndexByte(item, '/'); i >= 0 {
			rng = item[:i]
			n, err := strconv.Atoi(item[i+1:])
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%q: step must be a positive integer", item)
			}
			step = n
		}
		lo, hi := f.min, f.max
		switch {
		case rng == "*":
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if lo, err = cronValue(a, f); err != nil {
				return nil, err
			}
			if hi, err = cronValue(b, f); err != nil {
				return nil, err
			}
			if lo > hi {
				return nil, fmt.Errorf("%q: range start after its end", item)
			}
		default:
			v, err := cronValue(rng, f)
			if err != nil {
				return nil, err
			}
			lo = v
			if step == 1 {
				hi = v
			}
		}
		for v := lo; v <= hi; v += step {
			set[v-f.min] = true
		}
	}
	return set, nil
}

func cronValue(s string, f cronField) (int, error) {
	if v, ok := f.names[strings.ToUpper(s)]; ok {
		return v, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil && strings.ContainsAny(s, "LW#") {
		return 0, fmt.Errorf("%q: L, W and # are not supported by this checker", s)
	}
	if err != nil {
		return 0, fmt.Errorf("%q: not a number or name", s)
	}
	if v < f.min || v > f.max {
		return 0, fmt.Errorf("%d: out of range %d-%d", v, f.min, f.max)
	}
	return v, nil
}

// Matches reports whether the cron expression fires at minute t (in t's location); false for
// rate expressions.
func (e Expression) Matches(t time.Time) bool {
	if !e.IsCron() {
		return false
	}
	y := t.Year() - 1970
	if y < 0 || y >= len(e.year) {
		return false
	}
	return e.minute[t.Minute()] && e.hour[t.Hour()] && e.month[int(t.Month())-1] && e.year[y] &&
		(e.anyDOM || e.dom[t.Day()-1]) && (e.anyDOW || e.dow[int(t.Weekday())])
}

// Next returns the first firing strictly after t, searching at most one year ahead (in t's
// location; pass a time in the schedule's timezone). For rate expressions it is t + rate. ok is
// false when a cron expression does not fire within the year.
func (e Expression) Next(t time.Time) (next time.Time, ok bool) {
	if !e.IsCron() {
		return t.Add(e.Rate), true
	}
	c := t.Truncate(time.Minute).Add(time.Minute)
	end := t.AddDate(1, 0, 1)
	for ; c.Before(end); c = c.Add(time.Minute) {
		if e.Matches(c) {
			return c, true
		}
	}
	return time.Time{}, false
}
