package images

import (
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/otherix/otherix/messages"
)

const defaultMaxNameLen = 128

// NameFromURL returns the cache key for rawURL: the basename of its path.
// It refuses anything that could escape the pool directory or collide with
// the cache's own hidden files, using the default name length limit.
func NameFromURL(rawURL string) (string, error) {
	return nameFromURL(rawURL, defaultMaxNameLen)
}

func nameFromURL(rawURL string, maxLen int) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", newError(CodeURLInvalid, "cannot parse url", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", newError(CodeURLInvalid, fmt.Sprintf("scheme %q is not http or https", u.Scheme), nil)
	}
	if u.Host == "" {
		return "", newError(CodeURLInvalid, "url has no host", nil)
	}
	// The unescaped path is what a name must be checked on: %2F would
	// otherwise smuggle a separator past the split.
	p := u.Path
	if p == "" || strings.HasSuffix(p, "/") {
		return "", newError(CodeURLInvalid, "url path has no file name", nil)
	}
	name := path.Base(p)
	if err := validName(name, maxLen); err != nil {
		return "", err
	}
	return name, nil
}

// validName applies the rules a cached file name must follow: the control
// plane's (messages.ValidateImageName, so the API refuses what the cache
// would) and this cache's configured length limit.
func validName(name string, maxLen int) error {
	if err := messages.ValidateImageName(name); err != nil {
		return newError(CodeURLInvalid, "invalid image name: "+err.Error(), nil)
	}
	if len(name) > maxLen {
		return newError(CodeURLInvalid, fmt.Sprintf("image name is %d bytes, the limit is %d", len(name), maxLen), nil)
	}
	return nil
}
