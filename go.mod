module github.com/roomcast/roomcast

go 1.26.8

require (
	github.com/go-chi/chi/v5 v5.5.0
	golang.org/x/sys v0.48.0
)
