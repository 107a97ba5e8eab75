package icetable

import (
	"testing"
	"time"
)

func TestPositionCompare(t *testing.T) {
	for _, c := range []struct {
		a, b Position
		want int
	}{
		{Position{}, Position{}, 0},
		{Position{}, Position{Seq: "1"}, -1},
		{Position{Seq: "9"}, Position{Seq: "10"}, -1}, // numeric, not lexical
		{Position{Seq: "49680849909475681728430605802066823898148066525991403522"}, Position{Seq: "49680849909475681728430605802066823898148066525991403523"}, -1},
		{Position{Seq: "5", Sub: 2}, Position{Seq: "5", Sub: 10}, -1},
		{Position{Seq: "5", Sub: 3}, Position{Seq: "5", Sub: 3}, 0},
		{Position{Seq: "6"}, Position{Seq: "5", Sub: 99}, 1},
	} {
		if got := c.a.Compare(c.b); got != c.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := c.b.Compare(c.a); got != -c.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
}

func TestParsePosition(t *testing.T) {
	for _, s := range []string{"", "none", "1", ":0", "01:0", "1:-1", "1:x", "a:0", "1:0:0", " 1:0", "1:9223372036854775808"} {
		if p, err := ParsePosition(s); err == nil {
			t.Errorf("ParsePosition(%q) = %v, want an error", s, p)
		}
	}
	for _, p := range []Position{{Seq: "0"}, {Seq: "123", Sub: 7}, {Seq: "49680849909475681728430605802066823898148066525991403522", Sub: 0}} {
		got, err := ParsePosition(p.String())
		if err != nil || got != p {
			t.Errorf("round trip of %v: %v, %v", p, got, err)
		}
	}
}

// FuzzParsePosition: a summary value written by anything never panics the reader, and what
// parses round-trips.
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"1:0", "49680849909475681728430605802066823898148066525991403522:3", "", "1:", ":1", "0:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePosition(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Fatalf("ParsePosition(%q) = %v, which prints as %q", s, p, p.String())
		}
	})
}

func TestPositionKeyRoundTrip(t *testing.T) {
	k := PositionKey("recstream-events", "shardId-000000000007")
	sk, ok := parsePositionKey(k)
	if !ok || sk != (ShardKey{"recstream-events", "shardId-000000000007"}) {
		t.Fatalf("parsePositionKey(%q) = %v, %v", k, sk, ok)
	}
	for _, bad := range []string{"recstream.position.", "recstream.position.s", "recstream.position./x", "other.s/x"} {
		if _, ok := parsePositionKey(bad); ok {
			t.Errorf("parsePositionKey(%q) accepted", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, c := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Catalog = "glue" }, "catalog:"},
		{func(c *Config) { c.SQL.Schema = "Bad-Schema" }, "sql.schema:"},
		{func(c *Config) { c.Catalog = "rest" }, "rest.uri:"},
		{func(c *Config) { c.Catalog, c.REST.URI, c.REST.SigV4 = "rest", "https://glue.example/iceberg", true }, "rest.signing_name:"},
		{func(c *Config) { c.Name = "" }, "name:"},
		{func(c *Config) { c.Namespace = "a.b" }, "namespace:"},
		{func(c *Config) { c.Warehouse = "gs://x" }, "warehouse:"},
		{func(c *Config) { c.CommitInterval = time.Minute }, "commit_interval:"},
		{func(c *Config) { c.CommitInterval = 0 }, "commit_interval:"},
	} {
		cfg := DefaultConfig()
		c.mut(&cfg)
		err := cfg.Validate()
		if err == nil || len(err.Error()) < len(c.want) || err.Error()[:len(c.want)] != c.want {
			t.Errorf("want an error starting %q, got %v", c.want, err)
		}
	}
}
