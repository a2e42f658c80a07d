package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func explainOut(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := runIO(context.Background(), append([]string{"explain"}, args...), strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestExplain reads field documentation from the compiled-in contract,
// offline: a kind, a nested field with its type and whether it is required,
// a kind given as a plural; a field that does not exist is a usage error
// naming the fields there are.
func TestExplain(t *testing.T) {
	code, out, _ := explainOut(t, "vm.spec.image")
	if code != 0 || !strings.Contains(out, "FIELD:    spec.image <object> (required)") ||
		!strings.Contains(out, "url <string> (required)") || !strings.Contains(out, "sha256 <string>\n") {
		t.Fatalf("explain vm.spec.image: exit %d\n%s", code, out)
	}
	for _, kind := range resourceKinds {
		if code, out, stderr := explainOut(t, kind+"s"); code != 0 || !strings.Contains(out, "KIND:     "+kind) || !strings.Contains(out, "FIELDS:") {
			t.Fatalf("explain %ss: exit %d\n%s%s", kind, code, out, stderr)
		}
	}
	if code, out, _ := explainOut(t, "vm.spec.cpus"); code != 0 || !strings.Contains(out, "<integer") {
		t.Fatalf("explain vm.spec.cpus: exit %d\n%s", code, out)
	}
	code, _, stderr := explainOut(t, "vm.spec.nope")
	if code != 2 || !strings.Contains(stderr, `no field "nope"`) || !strings.Contains(stderr, "image") {
		t.Fatalf("explain vm.spec.nope: exit %d\n%s", code, stderr)
	}
	if code, _, _ := explainOut(t, "volcano"); code != 2 {
		t.Fatalf("explain of an unknown kind: exit %d", code)
	}
}
