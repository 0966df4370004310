package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// ParseCommand parses the flags of a roomcast command the way every one of
// them does: -h writes usage and the flag defaults to out and returns
// flag.ErrHelp; a bad flag returns an error naming it and nothing is
// printed, since the flag package's habit of printing the whole usage
// around one error line buries it. The caller prints the error with
// CommandHint.
func ParseCommand(fs *flag.FlagSet, args []string, usage string, out io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(out, usage)
		fs.SetOutput(out)
		fs.PrintDefaults()
	}
	return err
}

// CommandHint is the line that follows a command's usage error.
func CommandHint(command string) string {
	return "roomcast " + command + " -h lists its flags"
}

// HideDefaults keeps -h from printing the defaults of the named flags,
// which a command takes from the environment: credentials (a token, the
// API key, the JWT secret) must not end up on a terminal or in a log.
func HideDefaults(fs *flag.FlagSet, names ...string) {
	for _, name := range names {
		if f := fs.Lookup(name); f != nil {
			f.DefValue = ""
		}
	}
}
