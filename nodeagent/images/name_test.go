package images

import (
	"strings"
	"testing"
)

func TestNameFromURL(t *testing.T) {
	tests := []struct {
		url  string
		want string // "" means refused with image_url_invalid
	}{
		{"https://cloud-images.example/noble/current/noble-server-cloudimg-amd64.img", "noble-server-cloudimg-amd64.img"},
		{"http://10.0.0.1:8080/a/b/disk.qcow2?token=x#frag", "disk.qcow2"},
		{"https://example.com/with%20space.img", "with space.img"},
		{"https://example.com/" + strings.Repeat("a", 128), strings.Repeat("a", 128)},
		{"https://example.com/" + strings.Repeat("a", 129), ""},
		{"https://example.com/", ""},
		{"https://example.com", ""},
		{"https://example.com/dir/", ""},
		{"https://example.com/.", ""},
		{"https://example.com/..", ""},
		{"https://example.com/a/..", ""},
		{"https://example.com/.hidden.img", ""},
		{"https://example.com/a%00b.img", ""},
		{"https://example.com/a%5Cb.img", ""},
		{"file:///etc/passwd", ""},
		{"ftp://example.com/a.img", ""},
		{"/local/a.img", ""},
		{"https:///a.img", ""},
		{"::not a url", ""},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			got, err := NameFromURL(tt.url)
			if tt.want == "" {
				if ErrorCode(err) != CodeURLInvalid {
					t.Fatalf("NameFromURL = %q, %v; want code %s", got, err, CodeURLInvalid)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NameFromURL = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestNameFromURLRespectsMaxNameLen(t *testing.T) {
	c := newCache(t, Options{MaxNameLen: 8})
	_, err := ensure(t, c, "http://127.0.0.1:1/123456789", "")
	wantCode(t, err, CodeURLInvalid)
	if !strings.Contains(err.Error(), "limit is 8") {
		t.Errorf("err = %v, want it to name the limit", err)
	}
}
