package main

import (
	"strings"
	"testing"

	"github.com/otherix/otherix/messages"
)

func TestParseNetwork(t *testing.T) {
	tests := []struct {
		in      string
		want    messages.NICSpec
		wantErr string
	}{
		{in: "backend", want: messages.NICSpec{Network: "backend"}},
		{in: "backend:10.0.0.5", want: messages.NICSpec{Network: "backend", IP: "10.0.0.5"}},
		{in: "", wantErr: "want NAME or NAME:IP"},
		{in: ":10.0.0.5", wantErr: "want NAME or NAME:IP"},
		{in: "backend:", wantErr: "is not an IPv4 address"},
		{in: "backend:10.0.0", wantErr: "is not an IPv4 address"},
		{in: "backend:fd00::1", wantErr: "is not an IPv4 address"},
		{in: "backend:10.0.0.5:1", wantErr: "is not an IPv4 address"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseNetwork(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestCreateRequestFromFlags(t *testing.T) {
	fl := vmCreateFlags{image: "https://img.example/d.qcow2", cpus: 2, userData: "-",
		networks: []string{"a", "b:192.168.1.9"}, stopped: true}
	req, err := fl.request("web-1", strings.NewReader("#cloud-config\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := req.Spec
	if req.Name != "web-1" || s.CPUs != 2 || s.MemoryMiB != 0 || s.PowerState != messages.PowerStopped ||
		s.UserData != "#cloud-config\n" || len(s.Networks) != 2 || s.Networks[1].IP != "192.168.1.9" {
		t.Fatalf("request = %+v", req)
	}
}

func TestCreateRequestChecksLocally(t *testing.T) {
	tests := []struct {
		name string
		fl   vmCreateFlags
		code string
	}{
		{"no image", vmCreateFlags{}, codeUsage},
		{"bad image", vmCreateFlags{image: "ftp://x/y"}, "invalid_field"},
		{"bad network", vmCreateFlags{image: "https://i.example/a", networks: []string{"n:x"}}, codeUsage},
		{"too many cpus", vmCreateFlags{image: "https://i.example/a", cpus: 100000}, "invalid_field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.fl.request("web-1", nil)
			if got := errorCode(err); got != tt.code {
				t.Fatalf("err = %v (code %q), want code %q", err, got, tt.code)
			}
		})
	}
	if _, err := (&vmCreateFlags{image: "https://i.example/a"}).request("Bad_Name", nil); errorCode(err) != "invalid_field" {
		t.Fatalf("bad name: err = %v", err)
	}
}
