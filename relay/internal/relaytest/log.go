package relaytest

import (
	"encoding/json"
	"strings"
	"testing"
)

// LogLine is one line of the relay's JSON log, with the fields of a
// request line (Msg "request"); other lines leave those empty.
type LogLine struct {
	Level      string  `json:"level"`
	Msg        string  `json:"msg"`
	RequestID  string  `json:"request_id"`
	Method     string  `json:"method"`
	URI        string  `json:"uri"`
	Status     int     `json:"status"`
	Bytes      *int    `json:"bytes"`
	Duration   *int64  `json:"duration"`
	Remote     string  `json:"remote"`
	Connection *string `json:"connection"`
}

// ParseLog parses every line of a JSON log, skipping empty ones, and
// fails the test on a line that is not JSON.
func ParseLog(t testing.TB, log string) []LogLine {
	t.Helper()
	var out []LogLine
	for _, s := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		if s == "" {
			continue
		}
		var line LogLine
		if err := json.Unmarshal([]byte(s), &line); err != nil {
			t.Fatalf("log line is not JSON (%v): %s", err, s)
		}
		out = append(out, line)
	}
	return out
}
