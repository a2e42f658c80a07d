package main

import (
	"strings"
	"testing"
)

func TestParseMemoryMiB(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr string
	}{
		{in: "512", want: 512},
		{in: "512Mi", want: 512},
		{in: "512M", want: 512},
		{in: "512MiB", want: 512},
		{in: "512mb", want: 512},
		{in: "1Gi", want: 1024},
		{in: "1G", want: 1024},
		{in: "1.5Gi", want: 1536},
		{in: "2GiB", want: 2048},
		{in: "1Ti", want: 1 << 20},
		{in: "1048576Ki", want: 1024},
		{in: "1073741824B", want: 1024},
		{in: " 4Gi ", want: 4096},
		{in: "", wantErr: "is not a size"},
		{in: "Gi", wantErr: "is not a size"},
		{in: "lots", wantErr: "is not a size"},
		{in: "-1Gi", wantErr: "is not a size"},
		{in: "0", wantErr: "is not a positive size"},
		{in: "1.2.3G", wantErr: "is not a positive size"},
		{in: "1Pi", wantErr: "unknown unit"},
		{in: "1iB", wantErr: "unknown unit"},
		{in: "100Ki", wantErr: "is not a whole number of MiB"},
		{in: "0.3Mi", wantErr: "is not a whole number of MiB"},
		{in: "99999999Ti", wantErr: "is too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseMemoryMiB(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %d, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestParseDiskGiB(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr string
	}{
		{in: "10", want: 10},
		{in: "10Gi", want: 10},
		{in: "10G", want: 10},
		{in: "1T", want: 1024},
		{in: "1.5T", want: 1536},
		{in: "2048Mi", want: 2},
		{in: "1536Mi", wantErr: "is not a whole number of GiB"},
		{in: "1.5Gi", wantErr: "is not a whole number of GiB"},
		{in: "512M", wantErr: "is not a whole number of GiB"},
		{in: "10 parsecs", wantErr: "unknown unit"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseDiskGiB(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %d, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestCreateFlagsUnits(t *testing.T) {
	fl := vmCreateFlags{image: "https://i.example/a.qcow2", memory: "2Gi", disk: "40G", node: "n1", arch: "arm64", cpus: 2}
	req, err := fl.request("web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := req.Spec; s.MemoryMiB != 2048 || s.DiskGiB != 40 || s.Node != "n1" || s.Arch != "arm64" || s.CPUs != 2 {
		t.Fatalf("spec = %+v", s)
	}
	// Unset sizes stay zero so that the server's defaults apply.
	fl = vmCreateFlags{image: "https://i.example/a.qcow2"}
	if req, err := fl.request("web-1", nil); err != nil || req.Spec.MemoryMiB != 0 || req.Spec.DiskGiB != 0 || req.Spec.Arch != "" {
		t.Fatalf("defaults: %+v %v", req.Spec, err)
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 2, "b\nc"},
		{"a\nb\nc\n", 5, "a\nb\nc\n"},
		{"a\nb\nc\n", 0, "a\nb\nc\n"},
		{"", 3, ""},
		{"only", 1, "only"},
	} {
		if got := string(lastLines([]byte(tc.in), tc.n)); got != tc.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
