package config

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/roomcast/rooms"
)

// TestLoadNamespaces reads namespace files: defaults come from the global
// options, [namespaces.default] changes what every namespace inherits,
// named namespaces override it field by field, and unknown keys and bad
// values are refused with an error naming them.
func TestLoadNamespaces(t *testing.T) {
	base := rooms.NamespaceOptions{Publish: rooms.PublishAuthenticated, Presence: true, JoinLeaveEvents: true}
	with := func(o rooms.NamespaceOptions, f func(*rooms.NamespaceOptions)) rooms.NamespaceOptions {
		f(&o)
		return o
	}
	cases := []struct {
		name    string
		file    string // "-" for no file at all
		want    rooms.Namespaces
		wantErr []string // substrings of the error, nil for success
	}{
		{
			name: "no file",
			file: "-",
			want: rooms.Namespaces{Default: base, Named: map[string]rooms.NamespaceOptions{}},
		},
		{
			name: "empty file",
			file: "",
			want: rooms.Namespaces{Default: base, Named: map[string]rooms.NamespaceOptions{}},
		},
		{
			name: "every option",
			file: `
strict_namespaces = true
[namespaces.chat]
anonymous = true
publish = "anyone"
presence = false
join_leave_events = false
history_size = 50
history_age = "90s"
max_payload = 1024
publish_rate = 2.5
publish_burst = 5
`,
			want: rooms.Namespaces{Default: base, Strict: true, Named: map[string]rooms.NamespaceOptions{
				"chat": {Anonymous: true, Publish: rooms.PublishAnyone, HistorySize: 50, HistoryAge: 90 * time.Second,
					MaxPayload: 1024, PublishRate: 2.5, PublishBurst: 5},
			}},
		},
		{
			name: "named namespaces inherit the default's overrides",
			file: `
[namespaces.default]
anonymous = true
max_payload = 2048
[namespaces.news]
publish = "server"
[namespaces.ops]
anonymous = false
`,
			want: rooms.Namespaces{
				Default: with(base, func(o *rooms.NamespaceOptions) { o.Anonymous, o.MaxPayload = true, 2048 }),
				Named: map[string]rooms.NamespaceOptions{
					"news": with(base, func(o *rooms.NamespaceOptions) {
						o.Anonymous, o.MaxPayload, o.Publish = true, 2048, rooms.PublishServer
					}),
					"ops": with(base, func(o *rooms.NamespaceOptions) { o.MaxPayload = 2048 }),
				},
			},
		},
		{
			name: "presence off turns off the join and leave events it inherits",
			file: "[namespaces.news]\npresence = false\n",
			want: rooms.Namespaces{Default: base, Named: map[string]rooms.NamespaceOptions{
				"news": with(base, func(o *rooms.NamespaceOptions) { o.Presence, o.JoinLeaveEvents = false, false })}},
		},
		{
			name: "default alone is not listed as a named namespace",
			file: "[namespaces.default]\npublish = \"anyone\"\n",
			want: rooms.Namespaces{Default: with(base, func(o *rooms.NamespaceOptions) { o.Publish = rooms.PublishAnyone }),
				Named: map[string]rooms.NamespaceOptions{}},
		},
		{name: "unknown top-level key", file: "strict = true\n", wantErr: []string{"unknown settings", "strict"}},
		{name: "unknown namespace key", file: "[namespaces.chat]\nanonymus = true\n", wantErr: []string{"unknown settings", "namespaces.chat.anonymus"}},
		{name: "bad publish rule", file: "[namespaces.chat]\npublish = \"everyone\"\n", wantErr: []string{"[namespaces.chat]", `publish = "everyone"`, "anyone, authenticated or server"}},
		{name: "bad publish rule in default", file: "[namespaces.default]\npublish = \"nobody\"\n", wantErr: []string{"[namespaces.default]", `"nobody"`}},
		{name: "history_size zero", file: "[namespaces.chat]\nhistory_size = 0\n", wantErr: []string{"[namespaces.chat]", "history_size"}},
		{name: "history_age not a duration", file: "[namespaces.chat]\nhistory_age = \"soon\"\n", wantErr: []string{"history_age", `"soon"`}},
		{name: "history_age too short", file: "[namespaces.chat]\nhistory_age = \"10ms\"\n", wantErr: []string{"history_age", "at least 1s"}},
		{name: "max_payload zero", file: "[namespaces.chat]\nmax_payload = 0\n", wantErr: []string{"max_payload"}},
		{name: "publish_rate negative", file: "[namespaces.chat]\npublish_rate = -1.0\n", wantErr: []string{"publish_rate"}},
		{name: "publish_burst zero", file: "[namespaces.chat]\npublish_burst = 0\n", wantErr: []string{"publish_burst"}},
		{name: "wrong type", file: "[namespaces.chat]\nanonymous = \"yes\"\n", wantErr: []string{"anonymous"}},
		{name: "bad namespace name", file: "[namespaces.Chat]\nanonymous = true\n", wantErr: []string{`"Chat"`, "not a namespace name"}},
		{name: "namespace name too long", file: "[namespaces." + strings.Repeat("n", 33) + "]\nanonymous = true\n", wantErr: []string{"not a namespace name"}},
		{name: "join and leave events without presence", file: "[namespaces.chat]\npresence = false\njoin_leave_events = true\n",
			wantErr: []string{"[namespaces.chat]", "join_leave_events = true needs presence = true"}},
		{name: "join and leave events where the default has no presence", file: "[namespaces.default]\npresence = false\n[namespaces.chat]\njoin_leave_events = true\n",
			wantErr: []string{"[namespaces.chat]", "join_leave_events"}},
		{name: "TOML syntax error", file: "[namespaces.chat\n", wantErr: []string{"namespace config"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "-" {
				path = filepath.Join(t.TempDir(), "roomcast.toml")
				if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := LoadNamespaces(path, base)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, want one saying %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				if path != "" && !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}

	if _, err := LoadNamespaces(filepath.Join(t.TempDir(), "missing.toml"), base); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing file: error %v, want one naming the file", err)
	}
}

// TestNamespacesLookup checks how loaded rules answer for listed,
// unlisted and default namespaces, with and without strict_namespaces.
func TestNamespacesLookup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roomcast.toml")
	body := "[namespaces.public]\nanonymous = true\n"
	for _, strict := range []bool{false, true} {
		file := body
		if strict {
			file = "strict_namespaces = true\n" + body
		}
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		ns, err := LoadNamespaces(path, rooms.NamespaceOptions{Publish: rooms.PublishAnyone})
		if err != nil {
			t.Fatal(err)
		}
		if o, err := ns.Lookup("public"); err != nil || !o.Anonymous {
			t.Errorf("strict=%v: public = %+v, %v", strict, o, err)
		}
		if o, err := ns.Lookup(rooms.DefaultNamespace); err != nil || o.Anonymous {
			t.Errorf("strict=%v: default = %+v, %v", strict, o, err)
		}
		_, err = ns.Lookup("other")
		if strict != (err != nil) {
			t.Errorf("strict=%v: unlisted namespace error %v", strict, err)
		}
	}
}

// TestNamespaceNumbersMustBeFinite: every numeric key of the namespace
// file, in a named table and in [namespaces.default], refuses NaN,
// infinities, negative and out-of-range values with an error naming the
// key and its table. publish_rate = nan was once accepted and ignored.
func TestNamespaceNumbersMustBeFinite(t *testing.T) {
	bad := map[string][]string{
		"publish_rate":  {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "-1.0", "0.0", "-0.0", "1e400"},
		"publish_burst": {"-1", "0", "1_000_001", "nan", "inf"},
		"max_payload":   {"-1", "0", "16_777_217", "nan", "-inf"},
		"history_size":  {"-1", "0", "1_000_001", "nan", "inf"},
		"history_age":   {`"-1s"`, `"0s"`, `"NaN"`, `"Inf"`, "nan"},
	}
	base := rooms.NamespaceOptions{Publish: rooms.PublishAuthenticated}
	for key, values := range bad {
		for _, v := range values {
			for _, table := range []string{"chat", rooms.DefaultNamespace} {
				t.Run(table+"/"+key+"="+v, func(t *testing.T) {
					file := fmt.Sprintf("[namespaces.%s]\n%s = %s\n", table, key, v)
					ns, err := ParseNamespaces([]byte(file), "roomcast.toml", base)
					if err == nil {
						t.Fatalf("accepted:\n%sgot %+v", file, ns)
					}
					for _, w := range []string{key, "roomcast.toml"} {
						if !strings.Contains(err.Error(), w) {
							t.Errorf("error %q does not name %q", err, w)
						}
					}
				})
			}
		}
	}
}

// FuzzParseNamespaces: any file is refused or gives rules whose numbers
// are usable limits: finite, positive where set, within the global bounds.
func FuzzParseNamespaces(f *testing.F) {
	f.Add([]byte("strict_namespaces = true\n[namespaces.chat]\npublish_rate = 2.5\npublish_burst = 5\nmax_payload = 1024\n"))
	f.Add([]byte("[namespaces.default]\npublish_rate = nan\n"))
	f.Add([]byte("[namespaces.news]\nhistory_size = 100\nhistory_age = \"1h\"\npublish = \"server\"\n"))
	f.Add([]byte("[namespaces.x]\npublish_rate = inf\nmax_payload = -1\n"))
	base := rooms.NamespaceOptions{Publish: rooms.PublishAuthenticated}
	f.Fuzz(func(t *testing.T, data []byte) {
		ns, err := ParseNamespaces(data, "fuzz.toml", base)
		if err != nil {
			return
		}
		check := func(name string, o rooms.NamespaceOptions) {
			r := o.PublishRate
			if math.IsNaN(r) || math.IsInf(r, 0) || r < 0 ||
				o.PublishBurst < 0 || o.PublishBurst > 1_000_000 ||
				o.MaxPayload < 0 || o.MaxPayload > 16<<20 ||
				o.HistorySize < 0 || o.HistorySize > 1_000_000 || o.HistoryAge < 0 {
				t.Errorf("namespace %q accepted with unusable numbers: %+v", name, o)
			}
			switch o.Publish {
			case rooms.PublishAnyone, rooms.PublishAuthenticated, rooms.PublishServer:
			default:
				t.Errorf("namespace %q accepted with publish rule %q", name, o.Publish)
			}
		}
		check(rooms.DefaultNamespace, ns.Default)
		for name, o := range ns.Named {
			if !namespaceName.MatchString(name) {
				t.Errorf("namespace name %q accepted", name)
			}
			check(name, o)
		}
	})
}

// The example namespace file loads, and docs/operations.md shows it as it
// is.
func TestExampleNamespaceFile(t *testing.T) {
	const path = "../../docs/namespaces.example.toml"
	ns, err := LoadNamespaces(path, rooms.NamespaceOptions{Publish: rooms.PublishAuthenticated, Presence: true, JoinLeaveEvents: true})
	if err != nil {
		t.Fatal(err)
	}
	if o, err := ns.Lookup("news"); err != nil || o.Publish != rooms.PublishServer || o.JoinLeaveEvents {
		t.Errorf("news: %+v, %v", o, err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	// The doc shows the file from its first rule on, without the header.
	_, rules, _ := strings.Cut(string(file), "\n\n")
	if !strings.Contains(string(doc), "```toml\n"+rules+"```") {
		t.Errorf("docs/operations.md does not show docs/namespaces.example.toml's rules as they are:\n%s", rules)
	}
}
