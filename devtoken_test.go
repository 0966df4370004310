package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestDevTokenWiring checks when the binary hands out development tokens
// and that it accepts the tokens it hands out.
func TestDevTokenWiring(t *testing.T) {
	const secret = "ROOMCAST_JWT_SECRET=a test HS256 secret of 32 bytes or more"
	cases := []struct {
		name   string
		env    []string
		status int
		warns  bool
	}{
		{"open mode", nil, http.StatusOK, false},
		{"open mode, turned off", []string{"ROOMCAST_DEV_TOKENS=false"}, http.StatusNotFound, false},
		{"a key is configured", []string{secret}, http.StatusNotFound, false},
		{"a key is configured, enabled on purpose", []string{secret, "ROOMCAST_DEV_TOKENS=true"}, http.StatusOK, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, addr := startRelay(t, append([]string{"ROOMCAST_ADDR=127.0.0.1:0", "ROOMCAST_LOG_FORMAT=json"}, c.env...))
			resp, err := http.Post("http://"+addr+"/v1/dev/token", "application/json", strings.NewReader(`{"name":"Alice"}`))
			if err != nil {
				t.Fatal(err)
			}
			var got struct{ Token, User, Name string }
			err = json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
			if resp.StatusCode != c.status || err != nil {
				t.Fatalf("POST /v1/dev/token: status %d (%v), want %d", resp.StatusCode, err, c.status)
			}
			if warned := strings.Contains(p.stderr.String(), "DEV TOKENS"); warned != c.warns {
				t.Errorf("warning logged: %v, want %v", warned, c.warns)
			}
			if c.status != http.StatusOK {
				return
			}
			if got.Name != "Alice" || !strings.HasPrefix(got.User, "dev-") {
				t.Errorf("answer %+v", got)
			}
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/tickets", nil)
			req.Header.Set("Authorization", "Bearer "+got.Token)
			tr, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			tr.Body.Close()
			if tr.StatusCode != http.StatusCreated {
				t.Errorf("a ticket for the development token: status %d, want 201", tr.StatusCode)
			}
		})
	}
}
