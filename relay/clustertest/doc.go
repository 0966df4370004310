// Package clustertest holds the multi-instance integration tests of the
// Redis backbone: they build the real roomcast binary, run several
// instances against one private redis-server, and check delivery, resume,
// forwarded commands, idempotency and presence across instances, and what
// happens when an instance is killed or Redis fails. It has no non-test
// code.
package clustertest
