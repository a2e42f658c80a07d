package images

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDetectFormat(t *testing.T) {
	mbr := make([]byte, 4096)
	mbr[510], mbr[511] = 0x55, 0xAA
	gpt := make([]byte, 4096)
	copy(gpt[512:], "EFI PART")
	oddMBR := append(append([]byte{}, mbr...), 0)

	tests := []struct {
		name string
		body []byte
		want string // "" means image_invalid_format
	}{
		{"qcow2 magic", append([]byte("QFI\xfb"), make([]byte, 100)...), "qcow2"},
		{"raw mbr", mbr, "raw"},
		{"raw gpt", gpt, "raw"},
		{"mbr but size not sector aligned", oddMBR, ""},
		{"zeros", make([]byte, 4096), ""},
		{"html", []byte("<html><body>404</body></html>"), ""},
		{"gzip", append([]byte{0x1f, 0x8b, 8, 0}, make([]byte, 1020)...), ""},
		{"empty", nil, ""},
		{"tiny", []byte("QF"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "img")
			if err := os.WriteFile(p, tt.body, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := detectFormat(p)
			if tt.want == "" {
				if ErrorCode(err) != CodeInvalidFormat {
					t.Fatalf("detectFormat = %q, %v; want code %s", got, err, CodeInvalidFormat)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("detectFormat = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
