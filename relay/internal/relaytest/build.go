package relaytest

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BuildRoomcast builds the roomcast binary from the module's root into dir
// and returns its path. The build is race-checked when the test binary is
// (see RaceEnabled), and version, when not empty, is stamped as the
// binary's version. It takes no testing.TB so that TestMain can call it.
func BuildRoomcast(dir, version string) (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(gomod)) == 0 {
		return "", fmt.Errorf("relaytest: go env GOMOD: %v %s", err, gomod)
	}
	binary := filepath.Join(dir, "roomcast")
	args := []string{"build", "-o", binary}
	if RaceEnabled {
		args = append(args, "-race")
	}
	if version != "" {
		args = append(args, "-ldflags", "-X main.version="+version)
	}
	build := exec.Command("go", append(args, ".")...)
	build.Dir = filepath.Dir(string(bytes.TrimSpace(gomod)))
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("relaytest: go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return binary, nil
}

// raceReport is how the race detector starts each report it prints.
const raceReport = "WARNING: DATA RACE"

// CheckRaces fails the test if a race-built process that logged to output
// reported a data race. Call it after the process has exited or been killed:
// a report is printed when the race happens, so a process that was killed
// afterwards is still caught.
func CheckRaces(t testing.TB, name string, output string) {
	t.Helper()
	if i := strings.Index(output, raceReport); i >= 0 {
		t.Errorf("%s reported a data race:\n%s", name, output[i:])
	}
}
