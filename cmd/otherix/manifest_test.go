package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/otherix/otherix/messages"
)

const twoVMs = `# two VMs
---
apiVersion: otherix.io/v1
kind: VM
name: web-1
spec:
  image: {url: https://img.example/d.qcow2, sha256: ` + sha + `}
  cpus: 2
  memory_mib: 1024
  disk_gib: 20
  user_data: |
    #cloud-config
  networks:
  - {network: backend, ip: 10.0.0.10}
  - network: frontend
  power_state: stopped
---
---
# only a comment
---
kind: vm
name: web-2
spec:
  image:
    url: https://img.example/d.qcow2
`

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func writeManifest(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vms.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadManifestsMultiDocument(t *testing.T) {
	p := writeManifest(t, twoVMs)
	res, err := loadManifests([]string{p}, nil, true)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if len(res) != 2 {
		t.Fatalf("got %d resources, want 2 (empty documents skipped)", len(res))
	}
	want := messages.VMSpec{
		Image: messages.ImageSource{URL: "https://img.example/d.qcow2", SHA256: sha},
		CPUs:  2, MemoryMiB: 1024, DiskGiB: 20, UserData: "#cloud-config\n",
		Networks:   []messages.NICSpec{{Network: "backend", IP: "10.0.0.10"}, {Network: "frontend"}},
		PowerState: messages.PowerStopped,
	}
	if r := res[0]; r.ref() != "vm/web-1" || !equalSpec(r.spec, want) {
		t.Errorf("first = %s %+v, want vm/web-1 %+v", r.ref(), r.spec, want)
	}
	if r := res[1]; r.ref() != "vm/web-2" || r.spec.CPUs != 0 || r.spec.Image.URL == "" {
		t.Errorf("second = %s %+v: want vm/web-2 with defaults left to the server", r.ref(), r.spec)
	}
	if want := p + ": document 2 (line 21)"; res[1].source != want {
		t.Errorf("source = %q, want %q", res[1].source, want)
	}
}

func equalSpec(a, b messages.VMSpec) bool { return reflect.DeepEqual(a, b) }

func TestLoadManifestsStdin(t *testing.T) {
	res, err := loadManifests([]string{"-"}, strings.NewReader("kind: VM\nname: a\nspec: {image: {url: https://i.example/a.img}}\n"), true)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if len(res) != 1 || res[0].name != "a" || !strings.HasPrefix(res[0].source, stdinName) {
		t.Fatalf("got %+v", res)
	}
	if _, err := loadManifests([]string{"-", "-"}, strings.NewReader(""), true); err == nil {
		t.Fatal("reading stdin twice was accepted")
	}
}

func TestLoadManifestsProblems(t *testing.T) {
	const img = "image: {url: https://img.example/d.qcow2}"
	tests := []struct {
		name, body string
		withSpec   bool
		want       string
	}{
		{"unknown kind", "kind: Pod\nname: p\n", true, `document 1 (line 1): unknown kind "Pod"`},
		{"missing kind", "name: p\n", true, "kind is required"},
		{"bad apiVersion", "apiVersion: v2\nkind: VM\nname: a\nspec: {" + img + "}\n", true, `apiVersion "v2" is not supported`},
		{"unknown top field", "kind: VM\nname: a\nlabels: {}\nspec: {" + img + "}\n", true, `unknown field "labels"`},
		{"unknown metadata field", "kind: VM\nmetadata: {name: a, labels: {}}\nspec: {" + img + "}\n", true, `unknown field "metadata.labels"`},
		{"missing name", "kind: VM\nspec: {" + img + "}\n", true, "metadata.name is required"},
		{"names disagree", "kind: VM\nname: a\nmetadata: {name: b}\nspec: {" + img + "}\n", true, `metadata.name "b" and name "a" disagree`},
		{"bad metadata name", "kind: VM\nmetadata: {name: Web_1}\nspec: {" + img + "}\n", true, "metadata.name:"},
		{"network without cidr", "apiVersion: otherix.dev/v1\nkind: Network\nmetadata: {name: backend}\nspec: {}\n", true, `spec.cidr: "" is not an IPv4 CIDR`},
		{"network host bits", "kind: Network\nmetadata: {name: backend}\nspec: {cidr: 10.0.0.1/24}\n", true, "has host bits set"},
		{"network unknown field", "kind: Network\nmetadata: {name: backend}\nspec: {cidr: 10.0.0.0/24, vlan: 3}\n", true, `unknown field "spec.vlan"`},
		{"network bad type", "kind: Network\nmetadata: {name: backend}\nspec: {cidr: 10.0.0.0/24, type: vlan}\n", true, "spec.type"},
		{"pool without driver", "kind: StoragePool\nmetadata: {name: fast}\n", true, "spec.driver: is required"},
		{"pool path traversal", "kind: StoragePool\nmetadata: {name: fast}\nspec: {driver: dir, path: /srv/../etc, all_nodes: true}\n", true, "spec.path"},
		{"pool unknown field", "kind: StoragePool\nmetadata: {name: fast}\nspec: {driver: dir, path: /srv/f, all_nodes: true, raid: 5}\n", true, `unknown field "spec.raid"`},
		{"pool without nodes", "kind: StoragePool\nmetadata: {name: fast}\nspec: {driver: dir, path: /srv/f}\n", true, "spec.nodes"},
		{"volume odd size", "kind: Volume\nmetadata: {name: data}\nspec: {size_bytes: 1000}\n", true, "not a multiple of 512"},
		{"volume no size", "kind: Volume\nmetadata: {name: data}\nspec: {pool: fast}\n", true, "spec.size_bytes: is required"},
		{"volume both sizes", "kind: Volume\nmetadata: {name: data}\nspec: {size: 1Gi, size_bytes: 1073741824}\n", true, "not both"},
		{"volume bad unit", "kind: Volume\nmetadata: {name: data}\nspec: {size: 1Qi}\n", true, "spec.size"},
		{"unknown nested field", "kind: VM\nname: a\nspec: {image: {url: https://i.example/a.img, size: 3}}\n", true, `unknown field "spec.image.size"`},
		{"unknown field in list", "kind: VM\nname: a\nspec: {" + img + ", networks: [{network: n}, {net: m}]}\n", true, `unknown field "spec.networks[1].net"`},
		{"field case matters", "kind: VM\nname: a\nspec: {" + img + ", CPUs: 2}\n", true, `unknown field "spec.CPUs"`},
		{"type error", "kind: VM\nname: a\nspec: {" + img + ", cpus: two}\n", true, "spec.cpus must be an integer, not a string"},
		// No Go type names: the shape of the object is described instead.
		{"image as a string", "kind: VM\nname: a\nspec: {image: https://i.example/a.img}\n", true, "spec.image must be an object with url and optional sha256, pull_policy, not a string"},
		{"networks as a mapping", "kind: VM\nname: a\nspec: {" + img + ", networks: {network: n}}\n", true, "spec.networks must be a list, each an object with network and optional ip, not an object"},
		{"not a mapping", "- a\n- b\n", true, "must be a mapping"},
		{"bad name", "kind: VM\nname: Web_1\nspec: {" + img + "}\n", true, "name:"},
		{"bad spec", "kind: VM\nname: a\nspec: {" + img + ", cpus: 999}\n", true, "spec.cpus: must be between"},
		{"missing image", "kind: VM\nname: a\n", true, "spec.image.url: is required"},
		{"duplicate", "kind: VM\nname: a\nspec: {" + img + "}\n---\nkind: VM\nname: a\nspec: {" + img + "}\n", true, "vm/a is already defined at"},
		{"no documents", "---\n# nothing\n---\n", true, "hold no documents"},
		{"bad yaml", "kind: VM\nname: [a\n", true, "document at line 1"},
		{"delete checks fields", "kind: VM\nname: a\nspec: {cpu: 1}\n", false, `unknown field "spec.cpu"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeManifest(t, tt.body)
			_, err := loadManifests([]string{p}, nil, tt.withSpec)
			var me *manifestError
			if !errors.As(err, &me) {
				t.Fatalf("err = %v, want a manifest error", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLoadManifestsDeleteNeedsNoSpec(t *testing.T) {
	p := writeManifest(t, "kind: VM\nname: a\n")
	res, err := loadManifests([]string{p}, nil, false)
	if err != nil || len(res) != 1 || res[0].ref() != "vm/a" {
		t.Fatalf("got %+v, %v", res, err)
	}
}

func TestLoadManifestsReportsEveryProblem(t *testing.T) {
	p := writeManifest(t, "kind: Pod\nname: p\n---\nkind: VM\nname: a\nspec: {bogus: 1}\n")
	_, err := loadManifests([]string{p, filepath.Join(t.TempDir(), "missing.yaml")}, nil, true)
	var me *manifestError
	if !errors.As(err, &me) || len(me.problems) != 3 {
		t.Fatalf("err = %v, want three problems", err)
	}
	var out strings.Builder
	printError(&out, err)
	if !strings.HasPrefix(out.String(), "Error: 3 problems in the manifests; nothing was sent [invalid_manifest]\n  - ") {
		t.Fatalf("printed %q", out.String())
	}
}

func TestSplitDocuments(t *testing.T) {
	in := "a: 1\r\n--- # next\r\n\r\n# c\r\nb: 2\n---\n---x: 3\n"
	got := splitDocuments([]byte(in))
	if len(got) != 3 {
		t.Fatalf("got %d chunks, want 3: %+v", len(got), got)
	}
	if got[0].line != 1 || got[1].line != 5 || string(got[1].body) != "\n# c\nb: 2\n" {
		t.Errorf("chunks = %+v", got)
	}
	// "---x" is content, not a separator.
	if !strings.Contains(string(got[2].body), "---x: 3") {
		t.Errorf("last chunk = %q", got[2].body)
	}
}

// TestLoadStorageManifests: a StoragePool and a Volume decode into their
// create requests, the pool's node list sorted and the volume's size read
// as the command line reads it.
func TestLoadStorageManifests(t *testing.T) {
	body := "kind: StoragePool\nmetadata: {name: fast}\nspec: {driver: dir, path: /srv/fast, nodes: [n2, n1]}\n" +
		"---\nkind: volume\nmetadata: {name: data}\nspec: {pool: fast, size: 20Gi, node: n1}\n"
	res, err := loadManifests([]string{"-"}, strings.NewReader(body), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].ref() != "storagepool/fast" || res[1].ref() != "volume/data" {
		t.Fatalf("%+v", res)
	}
	if p := res[0].pool; p.Name != "fast" || p.Spec.Driver != "dir" || p.Spec.Path != "/srv/fast" ||
		!reflect.DeepEqual(p.Spec.Nodes, []string{"n1", "n2"}) {
		t.Fatalf("pool %+v", p)
	}
	if v := res[1].volume; v.Name != "data" || v.Spec.Pool != "fast" || v.Spec.Node != "n1" || v.Spec.SizeBytes != 20<<30 {
		t.Fatalf("volume %+v", v)
	}
}

func TestParseVolumeSize(t *testing.T) {
	for in, want := range map[string]int64{"1Gi": 1 << 30, "512Mi": 512 << 20, "20": 20 << 30, "4096B": 4096, "1.5G": 3 << 29, "1T": 1 << 40} {
		if got, err := parseVolumeSize(in); err != nil || got != want {
			t.Errorf("%s: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1Gi", "1000B", "1Qi", "abc", "0.1K"} {
		if got, err := parseVolumeSize(in); err == nil {
			t.Errorf("%q accepted as %d", in, got)
		}
	}
	if sizeText(20<<30) != "20Gi" || sizeText(1536) != "1536B" || sizeText(3<<29) != "1536Mi" {
		t.Fatal(sizeText(20<<30), sizeText(1536), sizeText(3<<29))
	}
}
