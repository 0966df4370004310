package healthcheck

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/roomcast/roomcast/relay/internal/relaytest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// runCheck runs the command with args and no environment.
func runCheck(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, func(string) string { return "" }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCheck(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.Write([]byte(`{"status":"ready"}` + "\n"))
		case "/healthz":
			w.Write([]byte(`{"status":"ok"}` + "\n"))
		case "/unavailable":
			http.Error(w, `{"status":"draining"}`, http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		case "/slow":
			<-r.Context().Done()
		default:
			http.NotFound(w, r)
		}
	}))
	defer ts.Close()
	refused := httptest.NewServer(http.NotFoundHandler())
	refusedURL := refused.URL
	refused.Close()

	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string // in stdout when code is 0, in stderr otherwise
		// usage marks -h, which prints the usage, not one line.
		usage bool
	}{
		{"ready", []string{"-url", ts.URL + "/readyz"}, 0, `200 OK {"status":"ready"}`, false},
		{"base URL gets /readyz", []string{"-url", ts.URL}, 0, ts.URL + `/readyz: 200 OK`, false},
		{"base URL with slash gets /readyz", []string{"-url", ts.URL + "/"}, 0, ts.URL + `/readyz: 200 OK`, false},
		{"live gets /healthz", []string{"-live", "-url", ts.URL}, 0, ts.URL + `/healthz: 200 OK {"status":"ok"}`, false},
		{"503", []string{"-url", ts.URL + "/unavailable"}, 1, `503 Service Unavailable {"status":"draining"}`, false},
		{"404", []string{"-url", ts.URL + "/nowhere"}, 1, `404 Not Found`, false},
		{"redirect not followed", []string{"-url", ts.URL + "/moved"}, 1, `302 Found`, false},
		{"timeout", []string{"-timeout", "50ms", "-url", ts.URL + "/slow"}, 1, "deadline exceeded", false},
		{"connection refused", []string{"-url", refusedURL}, 1, "connection refused", false},
		{"not http", []string{"-url", "ftp://127.0.0.1/"}, 1, "must be an http:// or https:// URL", false},
		{"no host", []string{"-url", "/readyz"}, 1, "must be an http:// or https:// URL", false},
		{"extra argument", []string{"-url", ts.URL, "now"}, 1, `unexpected argument "now"`, false},
		// The error and a hint, not the whole usage around them.
		{"bad flag, not Docker's reserved 2", []string{"-nope"}, 1, "flag provided but not defined: -nope\nroomcast healthcheck -h lists its flags\n", false},
		{"help", []string{"-h"}, 0, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCheck(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d (stdout %q, stderr %q)", code, tc.code, stdout, stderr)
			}
			got, other := stdout, stderr
			if code != 0 {
				got, other = stderr, stdout
			}
			if !strings.Contains(got, tc.out) {
				t.Errorf("output %q does not contain %q", got, tc.out)
			}
			if tc.usage {
				if !strings.Contains(stderr, "Usage: roomcast healthcheck") {
					t.Errorf("stderr %q has no usage", stderr)
				}
				return
			}
			if other != "" {
				t.Errorf("unexpected output on the other stream: %q", other)
			}
			if strings.Count(got, "\n") != 1 && !strings.Contains(got, "-h lists its flags") {
				t.Errorf("output %q is not one line", got)
			}
		})
	}
}

// TestRelay checks a real relay through its life: starting, ready and
// draining, on readiness and liveness.
func TestRelay(t *testing.T) {
	r := relaytest.Start(t, relaytest.Options{NotReady: true})
	expect := func(stage string, live bool, want int) {
		t.Helper()
		args := []string{"-url", r.URL}
		if live {
			args = append(args, "-live")
		}
		if code, stdout, stderr := runCheck(t, args...); code != want {
			t.Errorf("%s, live=%v: exit code %d, want %d (stdout %q, stderr %q)", stage, live, code, want, stdout, stderr)
		}
	}
	expect("starting", false, 1)
	expect("starting", true, 0)
	r.Server.SetReady()
	expect("ready", false, 0)
	expect("ready", true, 0)
	r.Server.Drain(context.Background())
	expect("draining", false, 1)
	expect("draining", true, 0)
}

func TestTargetURL(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
		err  string
	}{
		{"default", nil, "http://127.0.0.1:8080/readyz", ""},
		{"all interfaces", map[string]string{"ROOMCAST_ADDR": ":8080"}, "http://127.0.0.1:8080/readyz", ""},
		{"all IPv4", map[string]string{"ROOMCAST_ADDR": "0.0.0.0:9000"}, "http://127.0.0.1:9000/readyz", ""},
		{"all IPv6", map[string]string{"ROOMCAST_ADDR": "[::]:9000"}, "http://127.0.0.1:9000/readyz", ""},
		{"one address", map[string]string{"ROOMCAST_ADDR": "10.1.2.3:8080"}, "http://10.1.2.3:8080/readyz", ""},
		{"one IPv6 address", map[string]string{"ROOMCAST_ADDR": "[fd00::1]:8080"}, "http://[fd00::1]:8080/readyz", ""},
		{"host name", map[string]string{"ROOMCAST_ADDR": "localhost:8080"}, "http://localhost:8080/readyz", ""},
		{"PORT alias", map[string]string{"PORT": "3000"}, "http://127.0.0.1:3000/readyz", ""},
		{"ROOMCAST_ADDR wins over PORT", map[string]string{"ROOMCAST_ADDR": ":8080", "PORT": "3000"}, "http://127.0.0.1:8080/readyz", ""},
		{"bad address", map[string]string{"ROOMCAST_ADDR": "8080"}, "", `ROOMCAST_ADDR "8080"`},
		{"bad PORT", map[string]string{"PORT": "80:80"}, "", `PORT ":80:80"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := targetURL("", "/readyz", func(k string) string { return tc.env[k] })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want an error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
