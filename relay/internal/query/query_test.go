package query_test

import (
	"net/url"
	"slices"
	"testing"

	"github.com/roomcast/roomcast/relay/internal/query"
)

func TestValues(t *testing.T) {
	for _, tc := range []struct {
		raw, key string
		want     []string
	}{
		{"", "a", nil},
		{"a=1", "a", []string{"1"}},
		{"a=1&b=2&a=3", "a", []string{"1", "3"}},
		{"a", "a", []string{""}},
		{"a=&a", "a", []string{"", ""}},
		{"%61=x", "a", []string{"x"}},
		{"a=x+y%2Bz", "a", []string{"x y+z"}},
		{"a=%zz&a=ok", "a", []string{"ok"}},
		{"a=1;b=2&a=3", "a", []string{"3"}},
		{"&&a=1&&", "a", []string{"1"}},
		{"ab=1", "a", nil},
	} {
		if got := query.Values(tc.raw, tc.key); !slices.Equal(got, tc.want) {
			t.Errorf("Values(%q, %q) = %q, want %q", tc.raw, tc.key, got, tc.want)
		}
		if got, want := query.Get(tc.raw, tc.key), first(tc.want); got != want {
			t.Errorf("Get(%q, %q) = %q, want %q", tc.raw, tc.key, got, want)
		}
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// FuzzValues: for any query and key, the values are url.ParseQuery's.
func FuzzValues(f *testing.F) {
	for _, s := range []string{"a=1&b=2", "%61=%zz&a=+", "cursor=AQg%3D&client=x;y", "a=1&a=2&a"} {
		f.Add(s, "a")
	}
	f.Fuzz(func(t *testing.T, raw, key string) {
		vals, _ := url.ParseQuery(raw)
		want := vals[key]
		if got := query.Values(raw, key); !slices.Equal(got, want) {
			t.Fatalf("Values(%q, %q) = %q, url.ParseQuery gives %q", raw, key, got, want)
		}
	})
}
