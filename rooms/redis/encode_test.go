package redis

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/roomcast/roomcast/rooms"
)

// appendBody and appendSummary must say what json.Marshal said: every
// instance decodes the body, older ones included.
func FuzzAppendBody(f *testing.F) {
	f.Add("lobby,#user:bob", "update", `{"n":1}`, "bob", "Bob", "c1", "c2,c3", false, false)
	f.Add("a", "é<&>", `"x y"`, "", "", "", "", true, true)
	f.Add("a", "e", `[1, 2,  {"a" : "<b>"}]`, "u\x00", "\xff", "", "", false, false)
	f.Add("a", "e", `{"a":`, "", "", "", "", false, false)
	f.Fuzz(func(t *testing.T, channels, event, data, user, name, client, exclude string, b64, volatile bool) {
		m := rooms.Message{Channels: strings.Split(channels, ","), Event: event, Data: json.RawMessage(data),
			Base64: b64, Client: client, Volatile: volatile}
		if exclude != "" {
			m.Exclude = strings.Split(exclude, ",")
		}
		if user != "" || name != "" {
			m.From = &rooms.Sender{User: user, Name: name}
		}
		want, wantErr := json.Marshal(body{Channels: m.Channels, Event: m.Event, Data: m.Data, Base64: m.Base64,
			From: m.From, Client: m.Client, Exclude: m.Exclude, Volatile: m.Volatile})
		got, err := appendBody(nil, m)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("appendBody error %v; json.Marshal's %v", err, wantErr)
		}
		if err != nil {
			return
		}
		var gb, wb body
		if err := json.Unmarshal(got, &gb); err != nil {
			t.Fatalf("appendBody wrote %s, which does not decode: %v", got, err)
		}
		if err := json.Unmarshal(want, &wb); err != nil {
			t.Fatal(err)
		}
		var gd, wd any
		_ = json.Unmarshal(gb.Data, &gd)
		_ = json.Unmarshal(wb.Data, &wd)
		gb.Data, wb.Data = nil, nil
		if !reflect.DeepEqual(gb, wb) || !reflect.DeepEqual(gd, wd) {
			t.Fatalf("appendBody wrote %s; json.Marshal %s", got, want)
		}
		wantSum, _ := json.Marshal(summary{Channels: m.Channels, Event: m.Event})
		var gs, ws summary
		if err := json.Unmarshal(appendSummary(nil, m.Channels, m.Event), &gs); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal(wantSum, &ws)
		if !reflect.DeepEqual(gs, ws) {
			t.Fatalf("appendSummary decodes to %+v; json.Marshal's to %+v", gs, ws)
		}
	})
}
