package main

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// nearestRank is the exact nearest-rank percentile of sorted values.
func nearestRank(sorted []int64, q float64) int64 {
	rank := (int(q*10)*len(sorted) + 999) / 1000 // q has at most one decimal here
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func TestPercentile(t *testing.T) {
	seq := func(from, to int64) []int64 {
		var out []int64
		for v := from; v <= to; v++ {
			out = append(out, v)
		}
		return out
	}
	tests := []struct {
		name   string
		values []int64
		q      float64
		want   int64
	}{
		{"empty", nil, 50, 0},
		{"one value", []int64{42}, 50, 42},
		{"one value, p100", []int64{42}, 100, 42},
		{"1..100 p50", seq(1, 100), 50, 50},
		{"1..100 p90", seq(1, 100), 90, 90},
		{"1..100 p99", seq(1, 100), 99, 99},
		{"1..100 p99.9", seq(1, 100), 99.9, 100},
		{"1..100 p100", seq(1, 100), 100, 100},
		{"1..1000 p99.9", seq(1, 1000), 99.9, 999},
		{"1..10 p0 is the minimum", seq(1, 10), 0, 1},
		{"1..10 p15 rounds the rank up", seq(1, 10), 15, 2},
		{"unsorted", []int64{9, 1, 5, 3, 7}, 50, 5},
		{"negative values count as 0", []int64{-5, 10}, 50, 0},
		{"the maximum is exact beyond 256 µs", []int64{1, 2, 100_001}, 100, 100_001},
		// 300 falls in a bucket 2 wide (300-301): the percentile is the
		// bucket's top, but never above the maximum.
		{"bucket top", []int64{300, 300, 1000}, 50, 301},
		{"bucket top capped by the maximum", []int64{300}, 50, 300},
		{"beyond the last bucket: the maximum", []int64{1 << 40, 1<<40 + 5}, 50, 1<<40 + 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h histogram
			for _, v := range tc.values {
				h.add(v)
			}
			if got := h.percentile(tc.q); got != tc.want {
				t.Fatalf("percentile(%g) = %d, want %d", tc.q, got, tc.want)
			}
		})
	}
}

// TestPercentileAccuracy compares the histogram with exact nearest-rank
// percentiles: below 256 µs they are equal, above within 1/128.
func TestPercentileAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, scale := range []float64{50, 5_000, 500_000, 5e7} {
		values := make([]int64, 10_000)
		var h histogram
		for i := range values {
			values[i] = int64(rng.ExpFloat64() * scale)
			h.add(values[i])
		}
		slices.Sort(values)
		for _, q := range []float64{1, 50, 90, 99, 99.9, 100} {
			exact, got := nearestRank(values, q), h.percentile(q)
			if got < exact || float64(got-exact) > float64(exact)/128 {
				t.Errorf("scale %g p%g: %d, exact %d", scale, q, got, exact)
			}
		}
		if h.max != values[len(values)-1] || h.min != values[0] {
			t.Errorf("scale %g: min %d max %d, want %d %d", scale, h.min, h.max, values[0], values[len(values)-1])
		}
	}
}

func TestBuckets(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 255, 256, 257, 511, 512, 513, 1000, 1 << 20, 1<<20 + 1, 1<<35 - 1} {
		b := bucketOf(v)
		if b < prev {
			t.Fatalf("bucketOf(%d) = %d, below the bucket of a smaller value (%d)", v, b, prev)
		}
		prev = b
		if b >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, beyond %d buckets", v, b, numBuckets)
		}
		high := bucketHigh(b)
		if high < v || float64(high-v) > float64(v)/128 {
			t.Fatalf("bucketOf(%d) = %d whose top is %d", v, b, high)
		}
		if b > 0 && bucketHigh(b-1) >= v {
			t.Fatalf("%d belongs in bucket %d (top %d) rather than %d", v, b-1, bucketHigh(b-1), b)
		}
	}
	if got := bucketOf(1 << 50); got != numBuckets-1 {
		t.Fatalf("a huge value goes to bucket %d, want the last (%d)", got, numBuckets-1)
	}
}

func TestRecorderConcurrent(t *testing.T) {
	r := newRecorder()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				r.record(g, int64(g*1000+i+1))
			}
		}()
	}
	wg.Wait()
	h := r.snapshot()
	if h.n != 8000 || h.min != 1 || h.max != 8000 {
		t.Fatalf("n %d min %d max %d, want 8000 1 8000", h.n, h.min, h.max)
	}
	if got := h.percentile(50); got < 4000 || got > 4000+4000/128 {
		t.Fatalf("median %d, want about 4000", got)
	}
}
