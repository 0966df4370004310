package rooms

import (
	"slices"
	"testing"
	"time"
)

func TestQuota(t *testing.T) {
	now := time.Unix(1000, 0)
	q := NewQuota(2, 3)
	q.now = func() time.Time { return now }
	later := now.Add(time.Second)
	steps := []struct {
		name string
		do   func() bool
		want bool
		held int
	}{
		{"two for alice", func() bool { return q.Take("alice", later, "a", "b") }, true, 2},
		{"renewing what alice holds needs no room", func() bool { return q.Take("alice", later, "b", "a") }, true, 2},
		{"a third for alice is refused", func() bool { return q.Take("alice", later, "c") }, false, 2},
		{"all or none: bob's pair would pass the global bound", func() bool { return q.Take("bob", time.Time{}, "x", "y") }, false, 2},
		{"duplicates count once", func() bool { return q.Take("bob", time.Time{}, "x", "x") }, true, 3},
		{"released, room again", func() bool { q.Release("alice", "a"); return q.Take("carol", later, "z") }, true, 3},
		{"expired holdings no longer count", func() bool { now = later; return q.Take("alice", later.Add(time.Second), "c", "d") }, true, 3},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want {
			t.Fatalf("%s: got %v, want %v", s.name, got, s.want)
		}
		if got := q.Held(); got != s.held {
			t.Fatalf("%s: %d held, want %d", s.name, got, s.held)
		}
	}
	if m := q.Missing("alice", "c", "e"); len(m) != 1 || m[0] != 1 {
		t.Fatalf("Missing = %v, want [1]", m)
	}
	var none *Quota
	if !none.Take("x", time.Time{}, "1") || none.Held() != 0 {
		t.Fatal("a nil quota refuses or holds")
	}
}

// TestQuotaUndo: a taking is undone only for the ids it added and no later
// taking renewed.
func TestQuotaUndo(t *testing.T) {
	q := NewQuota(10, 100)
	first, ok := q.Hold("c", time.Time{}, "a", "b")
	if !ok || !first.Added("a") || !first.Added("b") {
		t.Fatalf("first taking %+v %v, want a and b added", first, ok)
	}
	second, ok := q.Hold("c", time.Time{}, "b", "c")
	if !ok || second.Added("b") || !second.Added("c") {
		t.Fatalf("second taking %+v %v, want c added and b renewed", second, ok)
	}
	if undone := q.Undo(first); !slices.Equal(undone, []string{"a"}) {
		t.Errorf("first undone %v, want [a]: b was renewed since", undone)
	}
	if undone := q.Undo(second); !slices.Equal(undone, []string{"c"}) {
		t.Errorf("second undone %v, want [c]: it only renewed b", undone)
	}
	if n := q.Held(); n != 1 {
		t.Errorf("held %d, want b alone", n)
	}
	if undone := q.Undo(first); len(undone) != 0 {
		t.Errorf("undone twice: %v", undone)
	}
}
