package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"
)

// tagName is the struct tag that names config keys; the same tag koanf's
// unmarshaller reads, so the schema and the decoder always agree.
const tagName = "koanf"

// delim separates nesting levels in keys ("admin.email").
const delim = "."

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// schema is the set of keys a target struct can absorb. It is derived from
// the type, not from the defaults, so a key with a zero default is still
// known.
type schema struct {
	// leaves are keys that decode into a scalar, slice or text-unmarshalable
	// value.
	leaves map[string]bool
	// branches are keys of nested structs ("admin"); they hold no value of
	// their own.
	branches map[string]bool
	// open are keys of map or interface fields: any key below them is
	// accepted, since their contents are data rather than schema.
	open map[string]bool
}

func newSchema(t reflect.Type) *schema {
	s := &schema{leaves: map[string]bool{}, branches: map[string]bool{}, open: map[string]bool{}}
	s.walkStruct(t, "")
	return s
}

func (s *schema) walkStruct(t reflect.Type, prefix string) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, squash, skip := fieldKey(f)
		if skip {
			continue
		}
		ft := deref(f.Type)
		if squash && ft.Kind() == reflect.Struct {
			s.walkStruct(ft, prefix)
			continue
		}
		s.walkField(ft, join(prefix, name))
	}
}

func (s *schema) walkField(t reflect.Type, key string) {
	switch {
	case isLeafStruct(t):
		s.leaves[key] = true
	case t.Kind() == reflect.Struct:
		s.branches[key] = true
		s.walkStruct(t, key)
	case t.Kind() == reflect.Map || t.Kind() == reflect.Interface:
		s.leaves[key] = true
		s.open[key] = true
	default:
		s.leaves[key] = true
	}
}

// settable reports whether a value may be stored under key: a leaf, or
// anything inside a map or interface field.
func (s *schema) settable(key string) bool {
	if s.leaves[key] {
		return true
	}
	for p := key; ; {
		i := strings.LastIndex(p, delim)
		if i < 0 {
			return false
		}
		p = p[:i]
		if s.open[p] {
			return true
		}
	}
}

// known reports whether key may appear in a config file at all. Branches
// count, so `admin: {}` or `admin:` is not reported as a typo; if the value
// has the wrong shape the decoder says so.
func (s *schema) known(key string) bool {
	return s.settable(key) || s.branches[key]
}

// flatten walks a defaults value and stores its leaves in out by dotted key.
// Nil pointers are skipped so that their keys stay unset.
func flatten(v reflect.Value, prefix string, out map[string]any) error {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, squash, skip := fieldKey(f)
		if skip {
			continue
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Pointer && fv.IsNil() {
			continue
		}
		ft := deref(f.Type)
		if squash && ft.Kind() == reflect.Struct {
			if err := flatten(fv, prefix, out); err != nil {
				return err
			}
			continue
		}
		key := join(prefix, name)
		if ft.Kind() == reflect.Struct && !isLeafStruct(ft) {
			if err := flatten(fv, key, out); err != nil {
				return err
			}
			continue
		}
		if isLeafStruct(ft) {
			// koanf deep-copies its maps with copystructure, which drops
			// unexported fields (netip.Addr came out as "invalid IP"), so
			// store the text form and let the decoder's TextUnmarshaler hook
			// rebuild the value.
			text, err := leafText(fv)
			if err != nil {
				return fmt.Errorf("key %q: %w", key, err)
			}
			out[key] = text
			continue
		}
		out[key] = copyMaps(fv).Interface()
	}
	return nil
}

// leafText renders a text-unmarshalable struct as the string it decodes
// from.
func leafText(v reflect.Value) (string, error) {
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		b, err := m.MarshalText()
		return string(b), err
	}
	if v.CanAddr() {
		if m, ok := v.Addr().Interface().(encoding.TextMarshaler); ok {
			b, err := m.MarshalText()
			return string(b), err
		}
	}
	return "", fmt.Errorf("%s has UnmarshalText but no MarshalText", v.Type())
}

// copyMaps returns v with every map inside it copied, and string-keyed maps
// turned into map[string]any. The copy matters because koanf merges later
// sources into the maps it holds, which would otherwise write through into
// the caller's defaults struct. The conversion matters because koanf only
// merges map[string]any key by key; a typed default map would be replaced
// wholesale by a file or environment entry instead of extended. Other
// values are shared: koanf replaces them rather than writing into them.
func copyMaps(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Interface:
		if v.IsNil() {
			return v
		}
		return copyMaps(v.Elem())
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		if v.Type().Key().Kind() == reflect.String {
			out := make(map[string]any, v.Len())
			for it := v.MapRange(); it.Next(); {
				out[it.Key().String()] = copyMaps(it.Value()).Interface()
			}
			return reflect.ValueOf(out)
		}
		out := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			out.SetMapIndex(it.Key(), copyMaps(it.Value()))
		}
		return out
	default:
		return v
	}
}

// fieldKey returns the key a field decodes from, following mapstructure's
// rules: the tag name, else the Go field name; "-" skips; ",squash" inlines.
func fieldKey(f reflect.StructField) (name string, squash, skip bool) {
	tag := f.Tag.Get(tagName)
	if tag == "-" {
		return "", false, true
	}
	name, opts, _ := strings.Cut(tag, ",")
	for o := range strings.SplitSeq(opts, ",") {
		if o == "squash" {
			squash = true
		}
	}
	if name == "" {
		name = f.Name
	}
	return name, squash, false
}

// isLeafStruct reports structs such as time.Time or netip.Addr that decode
// from a single string rather than from a nested map.
func isLeafStruct(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && reflect.PointerTo(t).Implements(textUnmarshalerType)
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + delim + name
}
