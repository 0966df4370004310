// Package sentineltest runs the Backbone conformance suite through Sentinel:
// a primary, a replica and three redis-server --sentinel processes that
// its tests start (redistest.NewTopology). The relay-level failover tests
// are relay/sentineltest. Both have their own CI step (.ci/run).
package sentineltest
