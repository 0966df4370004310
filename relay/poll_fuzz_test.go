package relay

import (
	"encoding/json"
	"testing"

	"github.com/roomcast/roomcast/rooms"
)

// The poll answer is encoded by hand; it must be the JSON encoding/json
// gives pollAnswer, whatever the strings hold.
func FuzzPollAnswer(f *testing.F) {
	f.Add("c1.abc_DEF-9", "client-1", "tok", false)
	f.Add("", "", "", true)
	f.Add("<script>\"&'\\\u2028\x00é", "\x7f\xff", "a\nb", true)
	f.Fuzz(func(t *testing.T, cursor, client, connection string, reset bool) {
		got := appendPollAnswer(nil, rooms.PollResult{Cursor: cursor, Reset: reset, Client: client, Proof: connection})
		want, err := json.Marshal(pollAnswer{Events: []json.RawMessage{}, Cursor: cursor, Reset: reset,
			Client: client, Connection: connection})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, '\n')
		if string(got) != string(want) {
			t.Fatalf("appendPollAnswer = %s, encoding/json = %s", got, want)
		}
	})
}
