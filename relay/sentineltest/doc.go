// Package sentineltest runs the Redis backbone against real topologies its
// tests start: a primary, a replica and three redis-server --sentinel
// processes, with failovers forced while publishing and primaries
// restarted from their own persistence. Its tests have their own CI step
// (.ci/run) and time budget.
package sentineltest
