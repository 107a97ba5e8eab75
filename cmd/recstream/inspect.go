package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/recstream/recstream/internal/mysqldb"
	"github.com/recstream/recstream/internal/objstore"
	"github.com/recstream/recstream/worker"
)

// InspectReport summarises the recommendations location.
type InspectReport struct {
	Location     string         `json:"location"`
	Objects      []string       `json:"objects"`
	Records      int            `json:"records"`
	Unique       int            `json:"unique_sessions"`
	Duplicates   int            `json:"duplicates"` // records whose (shard, sequence) appeared before
	ErrorObjects int            `json:"error_objects"`
	ErrorRecords int            `json:"error_records"` // rejected records (lines of the errors/ objects)
	ErrorReasons map[string]int `json:"error_reasons"`
	Versions     map[string]int `json:"model_versions"`
	Samples      []Sample       `json:"samples"`
}

// Sample is one enriched event with product names, for people.
type Sample struct {
	SessionID   string   `json:"session_id"`
	Customer    int64    `json:"customer_number"`
	City        string   `json:"city"`
	Country     string   `json:"country"`
	Recommended []string `json:"recommended"`
	Anchor      string   `json:"anchor"`
	Similar     []string `json:"similar"`
}

func runInspect(ctx context.Context, app *App, args []string) error {
	fs := newFlagSet(app, "inspect")
	location := fs.String("location", app.Config.S3.Buckets.Recommendations, "recommendations location (s3://bucket/prefix or file:///dir)")
	samples := fs.Int("samples", 3, "sample events to show with product names")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.parse(args); err != nil {
		return err
	}
	store, err := openStore(ctx, app, "--location", *location)
	if err != nil {
		return err
	}
	var table *tableFiles
	if app.Config.Worker.Output.Table == "iceberg" {
		if table, err = liveTableFiles(ctx, app); err != nil {
			return err
		}
	}
	rep, err := inspect(ctx, store, app.Config.Worker.Format, *samples, table)
	if err != nil {
		return err
	}
	rep.Location = *location
	if table != nil {
		rep.Location = table.location
	}
	names := productNames(ctx, app)
	for i := range rep.Samples {
		s := &rep.Samples[i]
		s.Anchor = named(names, s.Anchor)
		for j := range s.Recommended {
			s.Recommended[j] = named(names, s.Recommended[j])
		}
		for j := range s.Similar {
			s.Similar[j] = named(names, s.Similar[j])
		}
	}
	if *asJSON {
		enc := json.NewEncoder(app.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	w := app.Stdout
	fmt.Fprintf(w, "%s: %d records in %d objects (%d duplicates), %d rejected events in %d errors/ objects\n",
		rep.Location, rep.Records, len(rep.Objects), rep.Duplicates, rep.ErrorRecords, rep.ErrorObjects)
	for _, k := range rep.Objects {
		fmt.Fprintf(w, "  %s\n", k)
	}
	if len(rep.ErrorReasons) > 0 {
		fmt.Fprintf(w, "rejected by reason: %v\n", rep.ErrorReasons)
	}
	fmt.Fprintf(w, "model versions: %v\n", rep.Versions)
	for _, s := range rep.Samples {
		fmt.Fprintf(w, "\nsession %s — customer %d in %s, %s\n  recommended: %s\n  similar to %s: %s\n",
			s.SessionID, s.Customer, s.City, s.Country, strings.Join(s.Recommended, "; "), s.Anchor, strings.Join(s.Similar, "; "))
	}
	return nil
}

// inspect reads every output object and every errors/ object below store; with table (the
// worker writes an Iceberg table) the table's live data files instead of the Hive objects.
func inspect(ctx context.Context, store objstore.Store, format string, samples int, table *tableFiles) (InspectReport, error) {
	rep := InspectReport{ErrorReasons: map[string]int{}, Versions: map[string]int{}}
	objs, err := store.List(ctx, "")
	if err != nil {
		return rep, err
	}
	seen := map[string]bool{}
	sessions := map[string]bool{}
	add := func(recs []worker.OutputRecord) {
		for _, r := range recs {
			rep.Records++
			id := r.ShardID + "/" + r.SequenceNumber + "/" + fmt.Sprint(r.SubSequenceNumber)
			if seen[id] {
				rep.Duplicates++
			}
			seen[id] = true
			sessions[r.SessionID] = true
			rep.Versions[r.ModelVersion]++
			if len(rep.Samples) < samples && len(r.RecommendedItems) > 0 {
				s := Sample{SessionID: r.SessionID, Customer: r.CustomerNumber, City: r.City, Country: r.Country, Anchor: r.SimilarItems.ProductCode}
				for _, it := range r.RecommendedItems {
					s.Recommended = append(s.Recommended, it.ID)
				}
				for _, it := range r.SimilarItems.SimilarItems {
					s.Similar = append(s.Similar, it.ID)
				}
				rep.Samples = append(rep.Samples, s)
			}
		}
	}
	for _, o := range objs {
		if strings.HasPrefix(o.Key, worker.ErrorsPrefix+"/") {
			rep.ErrorObjects++
			b, err := objstore.ReadAll(ctx, store, o.Key)
			if err != nil {
				return rep, err
			}
			ers, err := worker.DecodeErrorObject(b)
			if err != nil {
				return rep, fmt.Errorf("decode %s: %w", store.URL(o.Key), err)
			}
			for _, er := range ers {
				rep.ErrorRecords++
				rep.ErrorReasons[string(er.Reason)]++
			}
			continue
		}
		if table != nil || !strings.HasSuffix(o.Key, "."+worker.FormatExt(format)) {
			continue
		}
		rep.Objects = append(rep.Objects, o.Key)
		b, err := objstore.ReadAll(ctx, store, o.Key)
		if err != nil {
			return rep, err
		}
		recs, err := worker.DecodeObject(format, b)
		if err != nil {
			return rep, fmt.Errorf("decode %s: %w", store.URL(o.Key), err)
		}
		add(recs)
	}
	if table != nil {
		for _, f := range table.files {
			recs, err := table.read(ctx, f)
			if err != nil {
				return rep, err
			}
			rep.Objects = append(rep.Objects, f)
			add(recs)
		}
	}
	rep.Unique = len(sessions)
	sort.Strings(rep.Objects)
	return rep, nil
}

// productNames maps product codes to names from the source database; empty when unreachable
// (the summary then shows codes only).
func productNames(ctx context.Context, app *App) map[string]string {
	names := map[string]string{}
	db, err := mysqldb.Open(app.Config.MySQL)
	if err != nil {
		return names
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT productCode, productName FROM products")
	if err != nil {
		return names
	}
	defer rows.Close()
	for rows.Next() {
		var code, name string
		if rows.Scan(&code, &name) == nil {
			names[code] = name
		}
	}
	return names
}

func named(names map[string]string, code string) string {
	if n, ok := names[code]; ok {
		return n + " (" + code + ")"
	}
	return code
}
