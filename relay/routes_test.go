package relay_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestArchitectureNamesRelayFiles checks that every file docs/architecture.md
// names in its row for relay/ exists, so that the map of the edge cannot go
// stale when a resource's file is renamed or merged away.
func TestArchitectureNamesRelayFiles(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, row, ok := strings.Cut(string(doc), "\n| `relay/` |")
	if !ok {
		t.Fatal("docs/architecture.md has no row for `relay/`")
	}
	row, _, _ = strings.Cut(row, "\n")
	names := regexp.MustCompile("`([a-z0-9_]+\\.go)`").FindAllStringSubmatch(row, -1)
	if len(names) < 20 {
		t.Fatalf("the row for relay/ names %d files, want one per resource", len(names))
	}
	for _, m := range names {
		if _, err := os.Stat(m[1]); err != nil {
			t.Errorf("docs/architecture.md names relay/%s: %v", m[1], err)
		}
	}
}

// TestTestsHaveSourceTwins checks that the tests of relay/ sit beside what
// they test: every x_test.go (and x_internal_test.go, x_fuzz_test.go,
// x_bench_test.go) has an x.go. TestMain's file and the export to the
// external tests belong to no resource.
func TestTestsHaveSourceTwins(t *testing.T) {
	tests, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	if len(tests) == 0 {
		t.Fatal("no test files found in relay/")
	}
	for _, f := range tests {
		if f == "main_test.go" || f == "export_test.go" {
			continue
		}
		base := strings.TrimSuffix(f, "_test.go")
		for _, kind := range []string{"_internal", "_fuzz", "_bench"} {
			base = strings.TrimSuffix(base, kind)
		}
		if _, err := os.Stat(base + ".go"); err != nil {
			t.Errorf("%s has no source twin %s.go: put its tests beside the source they exercise", f, base)
		}
	}
}
