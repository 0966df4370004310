package relay

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/rooms"
)

// TestCodeTable: every code constant has its line, each name is used once,
// and each status is an error status.
func TestCodeTable(t *testing.T) {
	names := map[string]errCode{}
	for c := range numCodes {
		spec := codeTable[c]
		if spec.name == "" || spec.status == 0 || spec.message == "" {
			t.Errorf("code %d has no full line in codeTable: %+v", c, spec)
			continue
		}
		if !regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`).MatchString(spec.name) {
			t.Errorf("code %q is not snake_case", spec.name)
		}
		if prev, dup := names[spec.name]; dup {
			t.Errorf("codes %d and %d are both %q", prev, c, spec.name)
		}
		names[spec.name] = c
		if spec.status < 400 || http.StatusText(spec.status) == "" {
			t.Errorf("%s: status %d is not an error status", spec.name, spec.status)
		}
	}
	for _, d := range domainErrors {
		if d.code < 0 || d.code >= numCodes {
			t.Errorf("%v maps to no code", d.err)
		}
	}
}

// TestClassifyUsesTable: an error answers with its code's status from the
// table, whatever path classifies it.
func TestClassifyUsesTable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code errCode
	}{
		{errorf(codeInvalidJSON, "x"), codeInvalidJSON},
		{fmt.Errorf("publish: %w", rooms.ErrOutcomeUnknown), codeOutcomeUnknown},
		{fmt.Errorf("%w: %w", rooms.ErrBackboneDown, rooms.ErrLimitExceeded), codeLimitExceeded},
		{fmt.Errorf("wrapped: %w", rooms.ErrBackboneDown), codeBackboneUnavailable},
		{fmt.Errorf("wrapped: %w", rooms.ErrClientsFull), codeOverloaded},
		{errors.New("anything else"), codeInternal},
	} {
		code, msg := classify(tc.err)
		if code != tc.code || msg == "" {
			t.Errorf("classify(%v) = %s %q, want %s and a message", tc.err, code, msg, tc.code)
		}
	}
}

// errorRow is a row of the Errors table of docs/api.md:
// | `code` | status | when |.
var errorRow = regexp.MustCompile("^\\| `([a-z_]+)` \\| ([0-9]{3}) \\|")

// TestErrorCodesDocumented: docs/api.md's Errors table lists every code of
// codeTable with its status, and no code that does not exist.
func TestErrorCodesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Errors\n")
	if !ok {
		t.Fatal(`docs/api.md has no "## Errors" section`)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	documented := map[string]int{}
	for line := range strings.SplitSeq(section, "\n") {
		m := errorRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if _, dup := documented[m[1]]; dup {
			t.Errorf("docs/api.md documents %q twice", m[1])
		}
		documented[m[1]], _ = strconv.Atoi(m[2])
	}
	if len(documented) == 0 {
		t.Fatal("no rows found in docs/api.md's Errors table")
	}
	for c := range numCodes {
		spec := codeTable[c]
		status, ok := documented[spec.name]
		switch {
		case !ok:
			t.Errorf("code %q (%d) is not in docs/api.md's Errors table", spec.name, spec.status)
		case status != spec.status:
			t.Errorf("docs/api.md gives %q status %d; it answers %d", spec.name, status, spec.status)
		}
		delete(documented, spec.name)
	}
	for name := range documented {
		t.Errorf("docs/api.md documents code %q, which the relay never writes", name)
	}
}
