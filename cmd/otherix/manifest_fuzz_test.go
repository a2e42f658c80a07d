package main

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzManifest: `otherix create|apply -f` on any file. Loading never
// panics; a refusal is a manifestError listing at least one problem; an
// accepted file yields named resources of known kinds, each defined once,
// and loading it again gives the same resources.
func FuzzManifest(f *testing.F) {
	f.Add([]byte("kind: VM\nname: web-1\nspec:\n  image: {url: https://img.example/d.qcow2}\n  cpus: 2\n  memory_mib: 1024\n" +
		"  user_data: |\n    #cloud-config\n  networks:\n  - {network: backend, ip: 10.0.0.10}\n---\n" +
		"kind: Network\nname: backend\nspec: {cidr: 10.0.0.0/24}\n"))
	f.Add([]byte("apiVersion: v1\nkind: vm\nname: a\nspec: {image: {url: 'https://i.example/a.img'}}\n...\n---\n"))
	f.Add([]byte("kind: VM\nname: a\nspec: &x {image: {url: https://i/a}}\n---\nkind: VM\nname: b\nspec: *x\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("kind: VM\nname: a\nname: b\n"))
	f.Add([]byte("- 1\n- 2\n"))
	f.Fuzz(func(t *testing.T, file []byte) {
		res, err := loadManifests([]string{"-"}, bytes.NewReader(file), true)
		if err != nil {
			var me *manifestError
			if !errors.As(err, &me) || len(me.problems) == 0 {
				t.Fatalf("refusal %v (%T) lists no problem", err, err)
			}
			return
		}
		if len(res) == 0 {
			t.Fatal("accepted a file with no resources")
		}
		seen := map[string]bool{}
		for _, r := range res {
			if r.name == "" || (r.kind != kindVM && r.kind != kindNetwork && r.kind != kindStoragePool && r.kind != kindVolume) {
				t.Fatalf("resource %+v", r)
			}
			if seen[r.ref()] {
				t.Fatalf("%s accepted twice", r.ref())
			}
			seen[r.ref()] = true
		}
		again, err := loadManifests([]string{"-"}, bytes.NewReader(file), true)
		if err != nil || !reflect.DeepEqual(res, again) {
			t.Fatalf("second load differs: %v", err)
		}
	})
}
