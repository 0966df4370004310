// Package processtest holds the tests of the roomcast binary as a process:
// they build it once and drive it over real HTTP and real signals, as an
// operator and a curl user would (flags and environment, drain, logs,
// production mode, HTTP/2 without TLS, development tokens), and run the
// README's and docs/integrate.md's commands as written. They live under
// relay/ to use relay/internal/relaytest; they run from the repository's
// root. It has no non-test code.
package processtest
