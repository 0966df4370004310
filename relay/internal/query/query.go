// Package query reads single parameters out of a raw URL query without
// building the whole url.Values map: a long-poll reads four parameters and
// would otherwise parse its query twice (credentials, then the poll), a
// dozen allocations per request. The values are those url.ParseQuery gives
// for the key, in order.
package query

import (
	"net/url"
	"strings"
)

// Values returns the values of key in raw, as url.ParseQuery(raw)[key].
func Values(raw, key string) []string {
	var out []string
	each(raw, key, func(v string) bool { out = append(out, v); return true })
	return out
}

// Get returns the first value of key in raw, or "", as url.Values.Get.
func Get(raw, key string) string {
	var out string
	each(raw, key, func(v string) bool { out = v; return false })
	return out
}

// each calls f with every value of key in raw, in order, until f returns
// false. Pairs url.ParseQuery skips (a semicolon, a bad escape) are skipped.
func each(raw, key string, f func(string) bool) {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(k, "%+") {
			uk, err := url.QueryUnescape(k)
			if err != nil || uk != key {
				continue
			}
		} else if k != key {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			uv, err := url.QueryUnescape(v)
			if err != nil {
				continue
			}
			v = uv
		}
		if !f(v) {
			return
		}
	}
}
