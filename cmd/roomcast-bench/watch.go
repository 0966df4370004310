package main

import (
	"fmt"
	"sync"
	"time"
)

// serverWatch samples the relays' processes.
type serverWatch struct {
	pids       []int
	prev, last []procSample
	failed     map[int]bool // pids whose sampling failed (reported once)
}

func newServerWatch(pids []int) *serverWatch {
	return &serverWatch{pids: pids, prev: make([]procSample, len(pids)), last: make([]procSample, len(pids)), failed: map[int]bool{}}
}

// sample reads every process once; the previous reading moves to prev.
func (w *serverWatch) sample(errs *[]string) {
	for i, pid := range w.pids {
		w.prev[i] = w.last[i]
		s, err := sampleProc(pid)
		if err != nil {
			if !w.failed[pid] {
				w.failed[pid] = true
				*errs = append(*errs, fmt.Sprintf("server pid %d: %v", pid, err))
			}
			continue
		}
		w.last[i] = s
	}
}

// sampleRSS reads every process's RSS every interval until the returned
// function is called; that function returns the peak of each.
func (w *serverWatch) sampleRSS(every time.Duration) func() []int64 {
	peaks := make([]int64, len(w.pids))
	if len(w.pids) == 0 {
		return func() []int64 { return peaks }
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	read := func() {
		for i, pid := range w.pids {
			if s, err := sampleProc(pid); err == nil {
				peaks[i] = max(peaks[i], s.rssKB)
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			read()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() []int64 {
		close(stop)
		wg.Wait()
		read()
		return peaks
	}
}

// window is the CPU accounting of the publish window: from just before
// the first publish until the last delivery arrived (or Settle passed).
type window struct {
	serverCPU      []time.Duration
	self, machine  time.Duration
	selfEnd        time.Duration
	machineEnd     time.Duration
	serverCPUEnd   []time.Duration
	sampleFailures []string
}

func startWindow(w *serverWatch) *window {
	win := &window{}
	w.sample(&win.sampleFailures)
	for i := range w.pids {
		win.serverCPU = append(win.serverCPU, w.last[i].cpu)
	}
	win.self, win.machine = selfCPU(), machineBusy()
	return win
}

func (win *window) end(w *serverWatch) {
	win.selfEnd, win.machineEnd = selfCPU(), machineBusy()
	w.sample(&win.sampleFailures)
	for i := range w.pids {
		win.serverCPUEnd = append(win.serverCPUEnd, w.last[i].cpu)
	}
}

// server returns the CPU time of server i in the window.
func (win *window) server(i int) time.Duration { return win.serverCPUEnd[i] - win.serverCPU[i] }

// loadGenerator returns this process's CPU time in the window.
func (win *window) loadGenerator() time.Duration { return win.selfEnd - win.self }

// machineBusy returns the busy CPU time of the whole machine in the window.
func (win *window) machineBusy() time.Duration { return win.machineEnd - win.machine }
