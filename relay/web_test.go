package relay_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
	"github.com/roomcast/roomcast/web"
)

// TestWebFiles checks that the demo and the client module are served as
// embedded, with their types and a Content-Security-Policy that allows no
// inline code.
func TestWebFiles(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{})
	cases := []struct {
		path, file, contentType string
	}{
		{"/", "index.html", "text/html; charset=utf-8"},
		{"/roomcast.js", "roomcast.js", "text/javascript; charset=utf-8"},
		{"/app.js", "app.js", "text/javascript; charset=utf-8"},
		{"/style.css", "style.css", "text/css; charset=utf-8"},
		{"/favicon.svg", "favicon.svg", "image/svg+xml"},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			want, err := web.Files.ReadFile(c.file)
			if err != nil {
				t.Fatal(err)
			}
			resp := r.Get(t, c.path)
			if resp.Status != http.StatusOK || string(resp.Body) != string(want) {
				t.Fatalf("GET %s: status %d, %d bytes; want 200 with the %d bytes of %s", c.path, resp.Status, len(resp.Body), len(want), c.file)
			}
			h := resp.Header
			if got := h.Get("Content-Type"); got != c.contentType {
				t.Errorf("Content-Type %q, want %q", got, c.contentType)
			}
			csp := h.Get("Content-Security-Policy")
			for _, d := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
				if !strings.Contains(csp, d) {
					t.Errorf("Content-Security-Policy %q lacks %s", csp, d)
				}
			}
			if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
				t.Errorf("Content-Security-Policy %q allows inline code", csp)
			}
			if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("ETag") == "" {
				t.Errorf("headers %v lack nosniff or an ETag", h)
			}
			again := r.Do(t, relaytest.Request{Path: c.path, Header: http.Header{"If-None-Match": {h.Get("ETag")}}})
			if again.Status != http.StatusNotModified || len(again.Body) != 0 {
				t.Errorf("revalidation: status %d with %d bytes, want an empty 304", again.Status, len(again.Body))
			}
		})
	}
}

// TestDemoHasNoInlineCode checks the page against its own policy: no inline
// scripts, styles or event handlers, which the policy would block.
func TestDemoHasNoInlineCode(t *testing.T) {
	page, err := web.Files.ReadFile("index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := strings.ToLower(string(page))
	for _, bad := range []string{"<style", " style=", " onclick=", " onload=", " onsubmit=", " oninput=", "javascript:"} {
		if strings.Contains(html, bad) {
			t.Errorf("index.html contains %q, which the Content-Security-Policy blocks", bad)
		}
	}
	for i := 0; ; {
		j := strings.Index(html[i:], "<script")
		if j < 0 {
			break
		}
		i += j
		end := strings.Index(html[i:], ">")
		if !strings.Contains(html[i:i+end], "src=") {
			t.Errorf("index.html has an inline script at byte %d", i)
		}
		i += end
	}
	app, err := web.Files.ReadFile("app.js")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(app), "innerHTML") || strings.Contains(string(app), "insertAdjacentHTML") {
		t.Error("app.js inserts HTML; user text must only be inserted as text")
	}
}
