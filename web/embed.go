// Package web holds roomcast's browser side, embedded in the binary: the
// client module roomcast.js (served at /roomcast.js) and the demo chat
// served at / (index.html, app.js, style.css, favicon.svg). The files are plain, with no
// build step: what is in this directory is what browsers get.
package web

import "embed"

// Files are the browser files, by their names in this directory.
//
//go:embed roomcast.js index.html app.js style.css favicon.svg
var Files embed.FS
