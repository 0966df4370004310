package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/roomcast/roomcast/web"
)

// contentSecurityPolicy is what every browser file is served with: scripts,
// styles and connections from the relay's own origin only, no inline code,
// no plugins, no framing. The demo inserts user text only as text, and this
// makes any mistake in that harmless.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// asset is one embedded browser file, ready to serve.
type asset struct {
	name, contentType, etag string
	body                    []byte
}

// webAssets are the browser files by route.
var webAssets = map[string]asset{
	"/":            loadAsset("index.html", "text/html; charset=utf-8"),
	"/roomcast.js": loadAsset("roomcast.js", "text/javascript; charset=utf-8"),
	"/app.js":      loadAsset("app.js", "text/javascript; charset=utf-8"),
	"/style.css":   loadAsset("style.css", "text/css; charset=utf-8"),
	// Linked from index.html: browsers ask for /favicon.ico otherwise.
	"/favicon.svg": loadAsset("favicon.svg", "image/svg+xml"),
}

func loadAsset(name, contentType string) asset {
	b, err := web.Files.ReadFile(name)
	if err != nil {
		panic("relay: embedded browser file missing: " + name)
	}
	sum := sha256.Sum256(b)
	return asset{name: name, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, body: b}
}

// webRoutes serves the demo chat at /, the client module at /roomcast.js and
// development tokens at POST /v1/dev/token.
func (s *Server) webRoutes(r chi.Router) {
	for path, a := range webAssets {
		r.Get(path, a.serve)
	}
	r.Post("/v1/dev/token", s.devToken)
}

// serve answers with the file, revalidated by ETag on every use so that a
// new binary's files are picked up at once.
func (a asset) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}
