// Package config loads a process's settings in one fixed order: built-in
// defaults, then a YAML file, then OTHERIX_ environment variables, then the
// command-line flags the user actually set. Each later source overrides the
// earlier ones key by key.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/knadh/koanf/maps"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// envNesting separates nesting levels in environment variable names:
// OTHERIX_ADMIN__EMAIL is admin.email, while the single underscore in
// OTHERIX_DATA_DIR stays part of the key data_dir.
const envNesting = "__"

// Options says where Load reads settings from. Every source is optional.
type Options struct {
	// Defaults is a struct (or pointer to one) with `koanf:"..."` tags,
	// normally of the same type as the target. Its values are the baseline.
	Defaults any
	// File is a YAML file path; empty means no file. A named file that
	// cannot be read is an error, as is any key in it that the target does
	// not have.
	File string
	// EnvPrefix selects environment variables, e.g. "OTHERIX_". Empty
	// disables the environment source. Variables that map to no known key
	// are ignored, because other tools share the prefix (OTHERIX_CONFIG
	// belongs to the CLI).
	EnvPrefix string
	// Environ supplies the environment as KEY=VALUE pairs; nil means
	// os.Environ. It exists so tests can run in parallel.
	Environ func() []string
	// Flags is the parsed flag set. Only flags the user changed override;
	// a flag's default never beats the file or the environment.
	Flags *pflag.FlagSet
	// FlagKeys maps flag names to config keys ("data-dir" -> "data_dir").
	// Flags not listed here (such as --config) are not config keys.
	FlagKeys map[string]string
}

// Load fills into, a non-nil pointer to a struct with `koanf:"..."` tags,
// from the sources in opts. Strings such as "30s" decode into time.Duration
// fields, and "8080" into integers.
func Load(into any, opts Options) error {
	rv := reflect.ValueOf(into)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: target must be a non-nil pointer to a struct, got %T", into)
	}
	s := newSchema(rv.Elem().Type())
	k := koanf.New(delim)

	if err := loadDefaults(k, s, opts.Defaults); err != nil {
		return err
	}
	if opts.File != "" {
		if err := loadFile(k, s, opts.File); err != nil {
			return err
		}
	}
	if opts.EnvPrefix != "" {
		if err := loadEnv(k, s, opts.EnvPrefix, opts.Environ); err != nil {
			return err
		}
	}
	if opts.Flags != nil {
		if err := loadFlags(k, s, opts.Flags, opts.FlagKeys); err != nil {
			return err
		}
	}

	if err := k.UnmarshalWithConf("", into, koanf.UnmarshalConf{Tag: tagName}); err != nil {
		return fmt.Errorf("config: decode: %w", err)
	}
	return nil
}

func loadDefaults(k *koanf.Koanf, s *schema, defaults any) error {
	if defaults == nil {
		return nil
	}
	dv := reflect.ValueOf(defaults)
	if dv.Kind() == reflect.Pointer && dv.IsNil() {
		return nil
	}
	if deref(dv.Type()).Kind() != reflect.Struct {
		return fmt.Errorf("config: defaults must be a struct, got %T", defaults)
	}
	flat := map[string]any{}
	if err := flatten(dv, "", flat); err != nil {
		return fmt.Errorf("config: defaults: %w", err)
	}
	for key := range flat {
		// A defaults struct of another type than the target is allowed, but
		// a key the target cannot hold is a programming error.
		if !s.settable(key) {
			return fmt.Errorf("config: defaults: key %q is not in the target", key)
		}
	}
	if err := k.Load(flatProvider(flat), nil); err != nil {
		return fmt.Errorf("config: defaults: %w", err)
	}
	return nil
}

func loadFile(k *koanf.Koanf, s *schema, path string) error {
	// Parse into a scratch instance first so unknown keys are reported
	// before anything from the file is merged.
	fk := koanf.New(delim)
	if err := fk.Load(file.Provider(path), yaml.Parser()); err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	var unknown []string
	for _, key := range fk.Keys() {
		if !s.known(key) {
			unknown = append(unknown, key)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return &UnknownKeyError{File: path, Keys: unknown}
	}
	if err := k.Merge(fk); err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return nil
}

func loadEnv(k *koanf.Koanf, s *schema, prefix string, environ func() []string) error {
	if environ == nil {
		environ = os.Environ
	}
	p := env.Provider(delim, env.Opt{
		Prefix:      prefix,
		EnvironFunc: environ,
		TransformFunc: func(name, value string) (string, any) {
			key := envKey(prefix, name)
			if !s.settable(key) {
				return "", nil
			}
			return key, value
		},
	})
	if err := k.Load(p, nil); err != nil {
		return fmt.Errorf("config: environment: %w", err)
	}
	return nil
}

// envKey turns OTHERIX_HEARTBEAT__INTERVAL into heartbeat.interval.
func envKey(prefix, name string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, prefix)), envNesting, delim)
}

func loadFlags(k *koanf.Koanf, s *schema, fs *pflag.FlagSet, keys map[string]string) error {
	// Check the mapping up front: a typo here would make a flag silently do
	// nothing, which is worse than refusing to start.
	for name, key := range keys {
		if fs.Lookup(name) == nil {
			return fmt.Errorf("config: flag keys: no flag named %q", name)
		}
		if !s.settable(key) {
			return fmt.Errorf("config: flag keys: flag %q maps to unknown key %q", name, key)
		}
	}
	p := posflag.ProviderWithFlag(fs, delim, nil, func(f *pflag.Flag) (string, any) {
		key, ok := keys[f.Name]
		if !ok || !f.Changed {
			return "", nil
		}
		return key, posflag.FlagVal(fs, f)
	})
	if err := k.Load(p, nil); err != nil {
		return fmt.Errorf("config: flags: %w", err)
	}
	return nil
}

// flatProvider serves a map of dotted keys to koanf.
type flatProvider map[string]any

var _ koanf.Provider = flatProvider(nil)

// Read returns the map nested on the key delimiter.
func (p flatProvider) Read() (map[string]any, error) {
	return maps.Unflatten(p, delim), nil
}

// ReadBytes is not supported: the map is already parsed.
func (p flatProvider) ReadBytes() ([]byte, error) {
	return nil, errors.New("config: flat provider has no bytes")
}
