package main

import (
	"strings"
	"testing"
)

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{0, 10, 64, 1000} {
		p := appendPayload([]byte("prefix"), 3, 12345, 1795637791044123456, size)
		body := p[len("prefix"):]
		if size > minPayload && len(body) != size {
			t.Fatalf("size %d: body of %d bytes", size, len(body))
		}
		env := `{"id":"e-1","room":"bench","event":"bench","data":"` + string(body) + `","from":null,"client":null,"ts":1}`
		pub, seq, sent, ok := parseEnvelope([]byte(env))
		if !ok || pub != 3 || seq != 12345 || sent != 1795637791044123456 {
			t.Fatalf("size %d: parsed %d %d %d %v from %s", size, pub, seq, sent, ok, env)
		}
	}
}

func TestParseEnvelopeRefuses(t *testing.T) {
	for _, env := range []string{
		``,
		`{"data":null}`,
		`{"data":{"p":1}}`,
		`{"data":"1.2"}`,
		`{"data":"1.2.3"}`,
		`{"data":"1..3.x"}`,
		`{"data":"a.2.3.x"}`,
		`{"data":"1.2.99999999999999999999.x"}`,
		`{"data":"9999999.2.3.x"}`,
		`{"data":"` + strings.Repeat("1", 30) + `"}`,
	} {
		if pub, seq, sent, ok := parseEnvelope([]byte(env)); ok {
			t.Errorf("%s parsed as %d %d %d", env, pub, seq, sent)
		}
	}
}
