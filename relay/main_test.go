package relay_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// stream, poll and client the tests start must be stopped by the time they
// end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
