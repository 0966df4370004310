package main

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		stat string
		want time.Duration
		ok   bool
	}{
		{"1234 (roomcast) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0", 3 * time.Second, true},
		{"1234 (a) b (c) R 1 1 1 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 0 0", 100 * time.Millisecond, true},
		{"1234 (short) S 1 2", 0, false},
		{"no name", 0, false},
		{"1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 3 0", 0, false},
	}
	for _, tc := range tests {
		got, err := parseStatCPU([]byte(tc.stat))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: %v, %v; want %v (ok %v)", tc.stat, got, err, tc.want, tc.ok)
		}
	}
}

func TestStatusKB(t *testing.T) {
	status := []byte("Name:\troomcast\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nVmHWM:\t 99 kB\n")
	if got := statusKB(status, "VmRSS:"); got != 12345 {
		t.Fatalf("VmRSS %d, want 12345", got)
	}
	if got := statusKB(status, "VmSwap:"); got != 0 {
		t.Fatalf("missing VmSwap read as %d", got)
	}
}

func TestSampleSelf(t *testing.T) {
	s, err := sampleProc(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if s.rssKB <= 0 {
		t.Fatalf("own RSS %d kB", s.rssKB)
	}
	if machineBusy() <= 0 {
		t.Fatal("the machine was never busy")
	}
}
