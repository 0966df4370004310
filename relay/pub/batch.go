package pub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// maxFile bounds the events file read: the relay's -max-batch-bytes is at
// most 256 MiB.
const maxFile = 256 << 20

// readFile reads the events of name ("-": stdin).
func readFile(name string, stdin io.Reader) ([]byte, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("-file: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("-file: reading %s: %w", name, err)
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("-file: %s holds more than %d MiB, more than any relay accepts", name, maxFile>>20)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("-file: %s holds no events", name)
	}
	return b, nil
}

// sendBatch posts events to base's POST /v1/batch: as a JSON array when
// they start with '[', else as NDJSON. It prints the relay's answer and
// returns 0 when every event was stored.
func sendBatch(ctx context.Context, base, credential string, events []byte, stdout, stderr io.Writer) int {
	contentType := "application/x-ndjson"
	if bytes.HasPrefix(bytes.TrimSpace(events), []byte("[")) {
		contentType = "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/batch", bytes.NewReader(events))
	if err != nil {
		fmt.Fprintln(stderr, "roomcast pub:", err)
		return 1
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", "roomcast-pub")
	if credential != "" {
		req.Header.Set("Authorization", "Bearer "+credential)
	}
	resp, answer, ok := send(req, 64<<20, stderr)
	if !ok {
		return 1
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "roomcast pub: %s: %s\n", resp.Status, refusal(resp, answer))
		return 1
	}
	fmt.Fprintln(stdout, strings.TrimSpace(string(answer)))
	var body struct {
		Results []struct {
			Error *struct{ Code, Message string } `json:"error"`
			Key   string                          `json:"idempotency_key"`
		} `json:"results"`
	}
	if err := json.Unmarshal(answer, &body); err != nil {
		fmt.Fprintln(stderr, "roomcast pub: the answer is not a batch result:", err)
		return 1
	}
	refused, unknown := 0, 0
	for i, r := range body.Results {
		if r.Error == nil {
			continue
		}
		refused++
		fmt.Fprintf(stderr, "roomcast pub: event %d: %s: %s\n", i+1, r.Error.Code, r.Error.Message)
		if r.Key != "" {
			unknown++
		}
	}
	if refused == 0 {
		return 0
	}
	fmt.Fprintf(stderr, "roomcast pub: %d of %d events were not stored\n", refused, len(body.Results))
	if unknown > 0 {
		fmt.Fprintf(stderr, "roomcast pub: %d may have been: resend those with their answer's idempotency_key in the event, which publishes each at most once\n", unknown)
	}
	return 1
}
