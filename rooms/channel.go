package rooms

import "strings"

// Channels are what the backbone stores and carries: every room is one, under
// its canonical name, and so are the per-user and per-namespace channels,
// whose names start with '#', a character no room name may contain.
const (
	userChannelPrefix      = "#user:"
	namespaceChannelPrefix = "#ns:"
)

// UserChannel is the channel of private messages to user.
func UserChannel(user string) string { return userChannelPrefix + user }

// NamespaceChannel is the channel of broadcasts to every connection in a
// room of namespace ns.
func NamespaceChannel(ns string) string { return namespaceChannelPrefix + ns }

// IsRoomChannel reports whether ch is a room (not a user or namespace channel).
func IsRoomChannel(ch string) bool { return !strings.HasPrefix(ch, "#") }

// channelNamespace returns the namespace of a room channel.
func channelNamespace(ch string) string {
	if i := strings.IndexByte(ch, ':'); i >= 0 {
		return ch[:i]
	}
	return DefaultNamespace
}
