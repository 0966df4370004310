package redis

import (
	"errors"
	"net/url"
	"strings"
)

// urlError reports that the Redis URL raw could not be read, without the
// passwords it holds: the error is printed at start, and url.Parse quotes
// the whole URL in its errors (go-redis quotes some of its parameters).
func urlError(what, raw string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		// The URL is not one: where its password begins and ends is not
		// known, so nothing of it is repeated.
		return &redactedError{msg: what + ": not a valid URL (not repeated here: it may hold a password)", err: err}
	}
	msg := err.Error()
	if u, perr := url.Parse(raw); perr == nil {
		var secrets []string
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p)
		}
		for k, vs := range u.Query() {
			if strings.Contains(strings.ToLower(k), "password") {
				secrets = append(secrets, vs...)
			}
		}
		for _, s := range secrets {
			if s == "" {
				continue
			}
			for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s)} {
				msg = strings.ReplaceAll(msg, form, "xxxxx")
			}
		}
	}
	return &redactedError{msg: what + ": " + msg, err: err}
}

// redactedError is an error whose text was rewritten to leave secrets out;
// it still unwraps to the original for errors.Is and errors.As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
