package rooms

import (
	"strings"
	"testing"
)

// FuzzClientProof: a proof ("<client>.<secret>", from a query or the
// Roomcast-Connection header) is accepted only with a valid client id and
// secret, and then is exactly their join.
func FuzzClientProof(f *testing.F) {
	f.Add("bob-phone-42.Jb1mQ0yq8GkKv1ZbEwW1xQ")
	f.Add("short.Jb1mQ0yq8GkKv1ZbEwW1xQ")
	f.Add("a.b.c")
	f.Add("")
	f.Add("C7aQxPkmev5Li2HspoouQA")
	f.Add("bob-phone-42.\x00\xff")
	f.Fuzz(func(t *testing.T, proof string) {
		client, secret, ok := parseClientProof(proof)
		if !ok {
			if client != "" || secret != "" || proofSecret(proof) != "" {
				t.Fatalf("refused %q yet returned %q %q", proof, client, secret)
			}
			return
		}
		if !ValidClientID(client) || !ValidClientID(secret) || client+"."+secret != proof {
			t.Fatalf("accepted %q as %q . %q", proof, client, secret)
		}
		if !IsClientProof(proof) || strings.Count(proof, ".") != 1 {
			t.Fatalf("accepted %q, which is not a proof's shape", proof)
		}
	})
}
