package apierror

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/otherix/otherix/messages"
)

func TestDecodeStrictCodes(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	for _, tc := range []struct{ in, code string }{
		{`{"name":"a"}`, ""},
		{`{"name":"a","x":1}`, "unknown_field"},
		{`{"name":"a"} {}`, "invalid_json"},
		{`{"n":"1"}`, "invalid_field"},
		{``, "invalid_json"},
		{`{"name":"` + strings.Repeat("a", 100) + `"}`, "request_too_large"},
	} {
		var v body
		err := DecodeStrict(http.MaxBytesReader(httptest.NewRecorder(), ioNop(tc.in), 64), &v)
		var me *messages.Error
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.code != "" && (!errors.As(err, &me) || me.Code != tc.code):
			t.Errorf("%q: got %v, want code %s", tc.in, err, tc.code)
		}
	}
}

func ioNop(s string) *readCloser { return &readCloser{bytes.NewReader([]byte(s))} }

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }
