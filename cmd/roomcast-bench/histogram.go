package main

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// Latencies are kept in a log-linear histogram of microseconds, like
// HdrHistogram with 8 significant bits: values below 256 µs are exact,
// larger ones fall in buckets at most 1/128 (0.8%) wide, up to 2^35 µs
// (9.5 hours; larger values share the top bucket). Memory is fixed
// whatever the number of deliveries, and recording is one atomic add.
const (
	subBits    = 8
	subCount   = 1 << subBits // exact values, and buckets per power of two beyond
	halfCount  = subCount / 2
	maxShift   = 27 // largest shift: values up to 2^(subBits+maxShift) µs
	numBuckets = subCount + maxShift*halfCount
)

// bucketOf returns the bucket of v microseconds.
func bucketOf(v int64) int {
	if v < subCount {
		return int(max(v, 0))
	}
	shift := bits.Len64(uint64(v)) - subBits
	if shift > maxShift {
		return numBuckets - 1
	}
	return subCount + (shift-1)*halfCount + int(v>>shift) - halfCount
}

// bucketHigh returns the largest value of bucket b.
func bucketHigh(b int) int64 {
	if b < subCount {
		return int64(b)
	}
	k := b - subCount
	shift := k/halfCount + 1
	low := int64(k%halfCount+halfCount) << shift
	return low + 1<<shift - 1
}

// histogram is a snapshot of recorded latencies. Not safe for concurrent
// use; recorder is.
type histogram struct {
	counts   [numBuckets]uint64
	n        uint64
	sum      float64 // µs
	min, max int64   // µs, exact
}

func (h *histogram) add(v int64) {
	v = max(v, 0)
	if h.n == 0 || v < h.min {
		h.min = v
	}
	h.max = max(h.max, v)
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
}

func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
}

// percentile returns the nearest-rank q-th percentile (0 < q <= 100): the
// smallest recorded value (to the bucket's precision) that at least q% of
// values are less than or equal to. It is never above the exact maximum,
// so the 100th percentile is the maximum. An empty histogram gives 0.
func (h *histogram) percentile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	// The epsilon keeps float noise (99.9/100*1000 = 999.0000000000001)
	// from moving the rank up by one.
	rank := uint64(math.Ceil(q/100*float64(h.n) - 1e-9))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for b, c := range h.counts {
		if seen += c; seen >= rank {
			if b == numBuckets-1 {
				break // the overflow bucket has no top
			}
			return min(bucketHigh(b), h.max)
		}
	}
	return h.max
}

// mean returns the mean in µs, 0 for an empty histogram.
func (h *histogram) mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// recordShards spreads concurrent recording over separate counters.
const recordShards = 16

// recorder records latencies from many goroutines. Each caller passes a
// shard key (its subscriber number) so that goroutines rarely add to the
// same counters.
type recorder struct {
	shards [recordShards]recordShard
}

type recordShard struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Int64 // µs
	min    atomic.Int64 // µs + 1, 0 when unset
	max    atomic.Int64 // µs
}

func newRecorder() *recorder { return new(recorder) }

// record adds v microseconds under shard key.
func (r *recorder) record(key int, v int64) {
	v = max(v, 0)
	s := &r.shards[key%recordShards]
	s.counts[bucketOf(v)].Add(1)
	s.n.Add(1)
	s.sum.Add(v)
	for m := s.max.Load(); v > m && !s.max.CompareAndSwap(m, v); m = s.max.Load() {
	}
	for m := s.min.Load(); (m == 0 || v+1 < m) && !s.min.CompareAndSwap(m, v+1); m = s.min.Load() {
	}
}

// snapshot returns what was recorded so far.
func (r *recorder) snapshot() *histogram {
	h := new(histogram)
	for i := range r.shards {
		s := &r.shards[i]
		var part histogram
		for b := range s.counts {
			part.counts[b] = s.counts[b].Load()
		}
		part.n = s.n.Load()
		part.sum = float64(s.sum.Load())
		part.max = s.max.Load()
		part.min = max(s.min.Load()-1, 0)
		h.merge(&part)
	}
	return h
}
