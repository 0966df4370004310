//go:build !race

package relaytest

// RaceEnabled says whether this test binary was built with -race: the
// roomcast binaries it builds are then race-built too, so that forwarding,
// presence sweeps and Redis restarts in a real process are race-checked.
const RaceEnabled = false
