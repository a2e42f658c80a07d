package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/otherix/otherix/messages"
)

// manifestAPIVersion is the apiVersion a manifest names; it may also leave
// it out. legacyAPIVersion is what manifests of earlier releases named, still
// read.
const (
	manifestAPIVersion = "otherix.dev/v1"
	legacyAPIVersion   = "otherix.io/v1"
)

// Kinds of documents, compared case-insensitively (kindVolume is in
// manifest_storage.go).
const (
	kindVM          = "vm"
	kindNetwork     = "network"
	kindStoragePool = "storagepool"
)

// stdinName stands for "-f -" in messages.
const stdinName = "<stdin>"

// manifestHeader is what every document has, read first to choose the
// kind's strict shape.
type manifestHeader struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// vmDocument is the strict shape of a "kind: VM" document. Its spec is the
// API's own type, so a manifest accepts exactly what the API accepts. The
// name is metadata.name; a top-level name is the older spelling.
type vmDocument struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Metadata   manifestMetadata `json:"metadata"`
	Name       string           `json:"name"`
	Spec       messages.VMSpec  `json:"spec"`
}

// networkDocument is the strict shape of a "kind: Network" document.
type networkDocument struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Metadata   manifestMetadata `json:"metadata"`
	Spec       networkSpec      `json:"spec"`
}

// networkSpec is a network document's spec: the create request's fields.
type networkSpec struct {
	CIDR   string `json:"cidr"`
	Type   string `json:"type,omitempty"`
	Egress bool   `json:"egress,omitempty"`
	MTU    int    `json:"mtu,omitempty"`
}

// manifestMetadata is a document's metadata.
type manifestMetadata struct {
	Name string `json:"name"`
}

// resource is one decoded, checked document.
type resource struct {
	// source says where the document is: "web.yaml: document 2 (line 12)".
	source string
	kind   string // lower case: "vm", "network"
	name   string
	spec   messages.VMSpec
	// network is a network document's create request (kind network).
	network messages.CreateNetworkRequest
	// pool and volume are the create requests of the storage kinds.
	pool   messages.CreatePoolRequest
	volume messages.CreateVolumeRequest
}

// ref names the resource the way the CLI prints it: "vm/web-1".
func (r resource) ref() string { return r.kind + "/" + r.name }

// document is one YAML document of a file, before decoding.
type document struct {
	source string
	body   []byte
}

// manifestError lists every problem in a set of manifests, so a user fixes
// them in one go; nothing is sent while there is one.
type manifestError struct {
	problems []string
}

func (e *manifestError) Error() string { return strings.Join(e.problems, "; ") }

// loadManifests reads files ("-" is stdin), decodes every document strictly
// and checks it. withSpec also validates specs, which a delete does not need.
func loadManifests(files []string, stdin io.Reader, withSpec bool) ([]resource, error) {
	var docs []document
	var problems []string
	if n := countOf(files, "-"); n > 1 {
		problems = append(problems, fmt.Sprintf("-f - is given %d times; stdin can be read once", n))
	}
	for _, f := range files {
		ds, err := readDocuments(f, stdin)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		docs = append(docs, ds...)
	}
	var out []resource
	seen := map[string]string{}
	for _, d := range docs {
		r, err := decodeDocument(d, withSpec)
		if err != nil {
			problems = append(problems, d.source+": "+err.Error())
			continue
		}
		r.source = d.source
		if first, dup := seen[r.ref()]; dup {
			problems = append(problems, fmt.Sprintf("%s: %s is already defined at %s", d.source, r.ref(), first))
			continue
		}
		seen[r.ref()] = d.source
		out = append(out, r)
	}
	if len(problems) > 0 {
		return nil, &manifestError{problems: problems}
	}
	if len(out) == 0 {
		return nil, &manifestError{problems: []string{"the manifests hold no documents"}}
	}
	return out, nil
}

// readDocuments splits one file into its non-empty YAML documents, each
// converted to JSON.
func readDocuments(file string, stdin io.Reader) ([]document, error) {
	name, b, err := readManifest(file, stdin)
	if err != nil {
		return nil, err
	}
	var docs []document
	for _, chunk := range splitDocuments(b) {
		js, err := yaml.YAMLToJSON(chunk.body)
		if err != nil {
			return nil, fmt.Errorf("%s: document at line %d: %w", name, chunk.line, err)
		}
		if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
			continue // empty or only comments
		}
		docs = append(docs, document{
			source: fmt.Sprintf("%s: document %d (line %d)", name, len(docs)+1, chunk.line),
			body:   js,
		})
	}
	return docs, nil
}

func readManifest(file string, stdin io.Reader) (string, []byte, error) {
	if file == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return stdinName, nil, fmt.Errorf("read %s: %w", stdinName, err)
		}
		return stdinName, b, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return file, nil, err
	}
	return file, b, nil
}

// chunk is the text of one YAML document and the line its content starts on.
type chunk struct {
	body []byte
	line int
}

// splitDocuments cuts a multi-document YAML stream at "---" lines, as
// kubectl does, remembering where each document's content starts so that
// errors can point at it.
func splitDocuments(b []byte) []chunk {
	var chunks []chunk
	var cur bytes.Buffer
	start, n := 0, 0
	flush := func() {
		chunks = append(chunks, chunk{body: bytes.Clone(cur.Bytes()), line: max(start, 1)})
		cur.Reset()
		start = 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), len(b)+1)
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if isSeparator(line) {
			flush()
			continue
		}
		if start == 0 && isContent(line) {
			start = n
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return chunks
}

func isSeparator(line string) bool {
	rest, ok := strings.CutPrefix(line, "---")
	if !ok {
		return false
	}
	rest = strings.TrimSpace(rest)
	return rest == "" || strings.HasPrefix(rest, "#")
}

func isContent(line string) bool {
	t := strings.TrimSpace(line)
	return t != "" && !strings.HasPrefix(t, "#")
}

// decodeDocument decodes one document by its kind, strictly.
func decodeDocument(d document, withSpec bool) (resource, error) {
	var h manifestHeader
	if err := json.Unmarshal(d.body, &h); err != nil {
		return resource{}, errors.New("a document must be a mapping with kind, name and spec")
	}
	if h.APIVersion != "" && h.APIVersion != manifestAPIVersion && h.APIVersion != legacyAPIVersion {
		return resource{}, fmt.Errorf("apiVersion %q is not supported: use %q or leave it out", h.APIVersion, manifestAPIVersion)
	}
	switch strings.ToLower(h.Kind) {
	case "":
		return resource{}, errors.New("kind is required (kind: VM)")
	case kindVM:
		return decodeVM(d.body, withSpec)
	case kindNetwork:
		return decodeNetwork(d.body, withSpec)
	case kindStoragePool:
		return decodePool(d.body, withSpec)
	case kindVolume:
		return decodeVolume(d.body, withSpec)
	}
	return resource{}, fmt.Errorf("unknown kind %q: this client knows VM, Network, StoragePool and Volume", h.Kind)
}

// decodeNetwork decodes a Network document strictly and checks it as far
// as a client can (overlap and the supernet are the server's to judge).
func decodeNetwork(body []byte, withSpec bool) (resource, error) {
	var doc networkDocument
	if err := strictDecode(body, &doc); err != nil {
		return resource{}, err
	}
	name := doc.Metadata.Name
	if name == "" {
		return resource{}, errors.New("metadata.name is required")
	}
	r := resource{kind: kindNetwork, name: name, network: messages.CreateNetworkRequest{Name: name,
		CIDR: doc.Spec.CIDR, Type: doc.Spec.Type, Egress: doc.Spec.Egress, MTU: doc.Spec.MTU}}
	if err := messages.ValidateName("metadata.name", name); err != nil {
		return r, err
	}
	if withSpec {
		if _, err := messages.ParseNetworkCIDR("spec.cidr", doc.Spec.CIDR); err != nil {
			return r, err
		}
		if t := doc.Spec.Type; t != "" && t != messages.NetworkOverlay && t != messages.NetworkLocal {
			return r, messages.Invalid("spec.type", "must be %q or %q", messages.NetworkOverlay, messages.NetworkLocal)
		}
	}
	return r, nil
}

// decodeVM decodes a VM document strictly and checks it as the API would.
func decodeVM(body []byte, withSpec bool) (resource, error) {
	var doc vmDocument
	if err := strictDecode(body, &doc); err != nil {
		return resource{}, err
	}
	name, field := doc.Metadata.Name, "metadata.name"
	switch {
	case name == "" && doc.Name != "":
		name, field = doc.Name, "name"
	case name != "" && doc.Name != "" && doc.Name != name:
		return resource{}, fmt.Errorf("metadata.name %q and name %q disagree: give metadata.name only", name, doc.Name)
	case name == "":
		return resource{}, errors.New("metadata.name is required")
	}
	r := resource{kind: kindVM, name: name, spec: doc.Spec}
	if err := messages.ValidateName(field, name); err != nil {
		return r, err
	}
	if withSpec {
		spec := doc.Spec
		spec.Defaults()
		if err := spec.Validate(); err != nil {
			return r, err
		}
	}
	return r, nil
}

// strictDecode decodes JSON into v, refusing fields v does not have. It
// checks field names itself first, exactly and with their full path
// ("spec.image.size"): encoding/json matches names case-insensitively and
// names only the last element of an unknown one.
func strictDecode(body []byte, v any) error {
	var generic any
	if err := json.Unmarshal(body, &generic); err != nil {
		return err
	}
	if path := unknownField(generic, reflect.TypeOf(v), ""); path != "" {
		return fmt.Errorf("unknown field %q", path)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s must be %s, not %s", te.Field, jsonShape(te.Type), withArticle(te.Value))
	}
	return err
}

// jsonShape says what a Go type looks like in a manifest, never naming the
// Go type: "an integer", "an object with url and optional sha256".
func jsonShape(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "a list, each " + jsonShape(t.Elem())
	case reflect.Map:
		return "a mapping"
	case reflect.Struct:
		// Small objects are described by their fields; a large one (a
		// whole spec) only as a mapping.
		var required, optional []string
		for i := range t.NumField() {
			f := t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" || name == "" {
				continue
			}
			if strings.Contains(opts, "omitempty") {
				optional = append(optional, name)
			} else {
				required = append(required, name)
			}
		}
		if len(required)+len(optional) == 0 || len(required)+len(optional) > 4 {
			return "an object"
		}
		parts := required
		if len(optional) > 0 {
			parts = append(parts, "optional "+strings.Join(optional, ", "))
		}
		return "an object with " + strings.Join(parts, " and ")
	}
	return "a value of another kind"
}

// withArticle puts "a" or "an" before a JSON kind name ("string", "object").
func withArticle(kind string) string {
	if kind != "" && strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}

// unknownField returns the path of the first field of v (in sorted order)
// that type t does not declare, or "".
func unknownField(v any, t reflect.Type, path string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return "" // a type error, which the decoder reports
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				return join(path, k)
			}
			if p := unknownField(m[k], ft, join(path, k)); p != "" {
				return p
			}
		}
	case reflect.Slice, reflect.Array:
		items, _ := v.([]any)
		for i, item := range items {
			if p := unknownField(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	}
	return ""
}

// jsonFields maps the JSON names of t's exported fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}
