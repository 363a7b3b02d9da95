package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docExamples returns the JSON documents in a docs page's ```json blocks.
func docExamples(t *testing.T, page string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", page))
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	for _, block := range strings.Split(string(data), "```json\n")[1:] {
		body, _, ok := strings.Cut(block, "```")
		if !ok {
			t.Fatalf("docs/%s: unterminated json block", page)
		}
		var doc map[string]any
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatalf("docs/%s: json block does not parse: %v\n%s", page, err, body)
		}
		docs = append(docs, doc)
	}
	return docs
}

// TestDocExamplesThroughCtl puts the route and cluster documents that
// docs/routing.md and docs/health.md show through 'snapgate ctl put -f'
// against a real ctrl, and checks that 'ctl get' shows every field the
// operator set, so the examples stay valid and nothing set is hidden.
func TestDocExamplesThroughCtl(t *testing.T) {
	g := newGateway(t)
	g.startCtrl()
	// The route example sends to a canary cluster the page does not show.
	g.mustCtl("cluster", "put", "--id", "api-canary", "--endpoint", "10.0.0.9:8080")
	dir := t.TempDir()
	var clusters, routes []map[string]any
	for _, page := range []string{"routing.md", "health.md"} {
		for _, doc := range docExamples(t, page) {
			if _, ok := doc["endpoints"]; ok {
				clusters = append(clusters, doc)
			} else {
				routes = append(routes, doc)
			}
		}
	}
	if len(clusters) < 2 || len(routes) < 1 {
		t.Fatalf("found %d cluster and %d route examples in the docs, want at least 2 and 1", len(clusters), len(routes))
	}
	for i, doc := range append(clusters, routes...) {
		noun := "route"
		if i < len(clusters) {
			noun = "cluster"
		}
		file := filepath.Join(dir, noun+".json")
		b, _ := json.Marshal(doc)
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		g.mustCtl(noun, "put", "-f", file)
		out := g.mustCtl(noun, "get", doc["id"].(string))
		for field := range doc {
			shown := field
			switch field {
			case "id":
				continue // the first line: the kind and the id
			case "endpoints":
				shown = "endpoint[0]"
			case "headers":
				shown = "headers[0]"
			}
			if !strings.Contains(out, shown) {
				t.Errorf("ctl %s get %s does not show %q, which the docs example sets:\n%s", noun, doc["id"], field, out)
			}
		}
	}
	out := g.mustCtl("cluster", "get", "api")
	for _, want := range []string{"lb ", "round_robin", "health ", `"panic_threshold_percent":50`} {
		if !strings.Contains(out, want) {
			t.Errorf("cluster get api lacks %q:\n%s", want, out)
		}
	}
	out = g.mustCtl("route", "get", "api-v2-canary")
	for _, want := range []string{"max_staleness_ms  30000", "on_stale          reject", "stale_header      true"} {
		if !strings.Contains(out, want) {
			t.Errorf("route get lacks %q:\n%s", want, out)
		}
	}
}
