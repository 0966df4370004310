// Package sentineltest runs relays on the Redis backbone against real
// topologies its tests start (redistest.NewTopology: a primary, a replica
// and three redis-server --sentinel processes), with failovers forced while
// publishing and primaries restarted from their own persistence; the
// backbone's conformance through Sentinel is rooms/redis/sentineltest.
// Both have their own CI step (.ci/run) and time budget.
package sentineltest
