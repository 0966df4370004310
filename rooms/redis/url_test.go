package redis

import (
	"context"
	"strings"
	"testing"
)

// A Redis URL the relay cannot read is reported at start, in its log: the
// error must not carry the passwords the URL holds (url.Parse quotes the
// whole URL in its errors, go-redis some of its parameters).
func TestURLErrorsHideCredentials(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, master string }{
		{"redis://user:s3cret@h:badport/0", ""},
		{"redis://:s3cret@h%zz:6379", ""},
		{"rediss://user:s3cret@h:6379/0?dial_timeout=s3cret", ""},
		{"redis://user:s3cret@h:6379/s3cret", ""},
		{"redis://sentinel:s3cret@s1:badport?addr=s2:26379&password=s3cret", "mymaster"},
		{"redis://s1:26379/0?addr=s2:26379&password=s3cret&dial_timeout=s3cret", "mymaster"},
		{"redis://sentinel:s3cret@s1:26379/s3cret", "mymaster"},
	} {
		_, err := New(context.Background(), tc.url, Options{SentinelMaster: tc.master})
		if err == nil {
			t.Fatalf("New(%q) read it", tc.url)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("New(%q): %v, which names the password", tc.url, err)
		}
	}
}

// FuzzURLErrorsHideCredentials: whatever else the URL holds, its
// password is not in the error.
func FuzzURLErrorsHideCredentials(f *testing.F) {
	f.Add("h:badport", "/0", "dial_timeout=X")
	f.Add("h%zz:1", "", "")
	f.Add("h:1", "/X", "addr=%zz")
	f.Fuzz(func(t *testing.T, host, path, query string) {
		const secret = "pw-Z9q7-secret"
		for _, raw := range []string{
			"redis://u:" + secret + "@" + host + path + "?" + query,
			"redis://" + host + path + "?password=" + secret + "&" + query,
		} {
			for _, master := range []string{"", "m"} {
				rdb, e := newRedisClient(raw, master)
				if e == nil {
					_ = rdb.Close()
					continue
				}
				if strings.Contains(e.Error(), secret) {
					t.Fatalf("%q: %v", raw, e)
				}
			}
		}
	})
}
