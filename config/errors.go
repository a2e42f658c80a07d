package config

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnknownKey is matched (via errors.Is) by every UnknownKeyError, so
// callers can tell a typo in a config file from an unreadable one.
var ErrUnknownKey = errors.New("config: unknown key")

// UnknownKeyError reports keys in a YAML file that map to no field of the
// target struct. A typo such as "listn" would otherwise be dropped silently
// and the process would start on the default listener.
type UnknownKeyError struct {
	// File is the YAML path as given in Options.File.
	File string
	// Keys are the offending dotted keys, sorted.
	Keys []string
}

// Error names the file and every unknown key, e.g.
// `config: /etc/otherix/api.yaml: unknown key "listn"`.
func (e *UnknownKeyError) Error() string {
	quoted := make([]string, len(e.Keys))
	for i, k := range e.Keys {
		quoted[i] = fmt.Sprintf("%q", k)
	}
	noun := "key"
	if len(e.Keys) > 1 {
		noun = "keys"
	}
	return fmt.Sprintf("config: %s: unknown %s %s", e.File, noun, strings.Join(quoted, ", "))
}

// Is lets errors.Is(err, ErrUnknownKey) match.
func (e *UnknownKeyError) Is(target error) bool { return target == ErrUnknownKey }
