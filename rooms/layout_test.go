package rooms_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestArchitectureNamesHubFiles checks that every file docs/architecture.md
// names in its map of the hub exists, so that the map cannot go stale when
// a file is renamed or merged away.
func TestArchitectureNamesHubFiles(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "### The hub, file by file")
	if !ok {
		t.Fatal("docs/architecture.md has no section \"The hub, file by file\"")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	names := regexp.MustCompile("`(rooms/[a-z_]+\\.go)`").FindAllStringSubmatch(section, -1)
	if len(names) < 10 {
		t.Fatalf("the hub's map names %d files, want one per job", len(names))
	}
	for _, m := range names {
		if _, err := os.Stat(filepath.Join("..", m[1])); err != nil {
			t.Errorf("docs/architecture.md names %s: %v", m[1], err)
		}
	}
}
