package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/spf13/cobra"

	"github.com/otherix/otherix/api/openapi"
)

// explainSchemas maps a kind to its schema in the control plane's contract.
var explainSchemas = map[string]string{kindNameVM: "VM", kindNameNode: "Node", kindNameNetwork: "Network", kindNameTask: "Task",
	kindNamePool: "StoragePool", kindNameVolume: "Volume"}

// contract is the control plane's OpenAPI document, compiled into the CLI:
// explain works offline and describes the API this CLI was built against.
var contract = sync.OnceValues(func() (*openapi3.T, error) {
	return openapi3.NewLoader().LoadFromData(openapi.ControlPlane)
})

// explainCommand is "otherix explain KIND[.FIELD…]".
func (a *app) explainCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "explain KIND[.FIELD...]",
		Short: "Describe a resource's fields, from the API contract",
		Long: `Describe a resource kind, or one of its fields, as the API contract this CLI
was built with documents it: the field's type, whether it is required, its
description, and the fields below it. Nothing is sent to a server.

` + kindsHelp,
		Example: `  otherix explain vm
  otherix explain vm.spec
  otherix explain vm.spec.image.sha256`,
		Args: exactArgs(1, "KIND or KIND.FIELD"),
		RunE: func(_ *cobra.Command, args []string) error {
			return a.explainField(a.stdout, args[0])
		},
	}
}

func (a *app) explainField(w io.Writer, path string) error {
	parts := strings.Split(path, ".")
	kind, err := resolveKind(parts[0])
	if err != nil {
		return err
	}
	doc, err := contract()
	if err != nil {
		return fmt.Errorf("the API contract compiled into this CLI does not load: %w", err)
	}
	ref := doc.Components.Schemas[explainSchemas[kind]]
	if ref == nil || ref.Value == nil {
		return fmt.Errorf("the API contract has no schema for %s", kind)
	}
	s := ref.Value
	required := true
	for i, field := range parts[1:] {
		s = elem(s)
		next, ok := s.Properties[field]
		if !ok || next.Value == nil {
			return usageError(fmt.Errorf("%s has no field %q; its fields: %s", strings.Join(parts[:i+1], "."), field,
				strings.Join(fieldNames(s), ", ")))
		}
		required = slices.Contains(s.Required, field)
		s = next.Value
	}
	fmt.Fprintf(w, "KIND:     %s\n", kind)
	if len(parts) > 1 {
		req := ""
		if required {
			req = " (required)"
		}
		fmt.Fprintf(w, "FIELD:    %s <%s>%s\n", strings.Join(parts[1:], "."), typeOf(s), req)
	}
	if d := describe(s); d != "" {
		fmt.Fprintf(w, "\nDESCRIPTION:\n%s\n", indent(d, "  "))
	}
	s = elem(s)
	if names := fieldNames(s); len(names) > 0 {
		fmt.Fprintf(w, "\nFIELDS:\n")
		for _, n := range names {
			f := s.Properties[n].Value
			req := ""
			if slices.Contains(s.Required, n) {
				req = " (required)"
			}
			fmt.Fprintf(w, "  %s <%s>%s\n", n, typeOf(f), req)
			if d := describe(f); d != "" {
				fmt.Fprintf(w, "%s\n", indent(firstParagraph(d), "    "))
			}
		}
	}
	return nil
}

// elem is the schema a field's fields are read from: an array's items.
func elem(s *openapi3.Schema) *openapi3.Schema {
	for s.Type.Is("array") && s.Items != nil && s.Items.Value != nil {
		s = s.Items.Value
	}
	return s
}

func fieldNames(s *openapi3.Schema) []string {
	names := make([]string, 0, len(s.Properties))
	for n := range s.Properties {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func typeOf(s *openapi3.Schema) string {
	switch {
	case s.Type.Is("array") && s.Items != nil && s.Items.Value != nil:
		return "[]" + typeOf(s.Items.Value)
	case len(s.Enum) > 0:
		var vs []string
		for _, v := range s.Enum {
			vs = append(vs, fmt.Sprint(v))
		}
		return strings.Join(vs, "|")
	case s.Type != nil && len(*s.Type) > 0:
		t := (*s.Type)[0]
		if s.Format != "" {
			t += " (" + s.Format + ")"
		}
		return t
	}
	return "object"
}

// describe is a field's description, or its title when it has none.
func describe(s *openapi3.Schema) string {
	if d := strings.TrimSpace(s.Description); d != "" {
		return d
	}
	return strings.TrimSpace(s.Title)
}

func firstParagraph(s string) string {
	p, _, _ := strings.Cut(s, "\n\n")
	return p
}

func indent(s, by string) string {
	return by + strings.ReplaceAll(s, "\n", "\n"+by)
}
