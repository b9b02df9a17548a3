package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// option reads one Caddyfile option of a module M, with the dispenser on
// the option's name. It only parses: the module's Validate checks values,
// for the Caddyfile and JSON alike.
type option[M any] func(m *M, d *caddyfile.Dispenser) error

// parseBlock reads a module's option block through its table of options,
// the one list of their names. prefix starts every message ("store redis:
// "); with once, an option given twice is an error.
func parseBlock[M any](d *caddyfile.Dispenser, m *M, options map[string]option[M], prefix string, once bool) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		set, ok := options[name]
		if !ok {
			return d.Errf("%sunrecognized option %q", prefix, name)
		}
		if once && seen[name] {
			return d.Errf("%soption %s given twice", prefix, name)
		}
		seen[name] = true
		if err := set(m, d); err != nil {
			return err
		}
	}
	return nil
}

// oneValue reads the single, non-empty value of the option d is on.
func oneValue(d *caddyfile.Dispenser, prefix string) (string, error) {
	name := d.Val()
	var v string
	if !d.Args(&v) || v == "" {
		return "", d.Errf("%s%s: want one value", prefix, name)
	}
	if d.NextArg() {
		return "", d.Errf("%s%s: want one value, got another: %q", prefix, name, d.Val())
	}
	return v, nil
}

// textOption is an option with one value, kept as written.
func textOption[M any](prefix string, field func(*M) *string) option[M] {
	return func(m *M, d *caddyfile.Dispenser) error {
		v, err := oneValue(d, prefix)
		*field(m) = v
		return err
	}
}

// listOption is an option with one or more values, kept as written.
func listOption[M any](prefix string, field func(*M) *[]string) option[M] {
	return func(m *M, d *caddyfile.Dispenser) error {
		name := d.Val()
		values := d.RemainingArgs()
		if len(values) == 0 {
			return d.Errf("%s%s: want one or more values", prefix, name)
		}
		*field(m) = append(*field(m), values...)
		return nil
	}
}

// flagOption is an option that takes no value.
func flagOption[M any](prefix string, field func(*M) *bool) option[M] {
	return func(m *M, d *caddyfile.Dispenser) error {
		name := d.Val()
		if d.NextArg() {
			return d.Errf("%s%s: takes no argument, got %q", prefix, name, d.Val())
		}
		*field(m) = true
		return nil
	}
}

// numberOption is an option with one whole number.
func numberOption[M any](prefix string, field func(*M) *int) option[M] {
	return func(m *M, d *caddyfile.Dispenser) error {
		name := d.Val()
		v, err := oneValue(d, prefix)
		if err != nil {
			return err
		}
		if *field(m), err = strconv.Atoi(v); err != nil {
			return d.Errf("%s%s: %q is not a number", prefix, name, v)
		}
		return nil
	}
}

// durationOption is an option with one positive duration. (Zero cannot be
// written: in JSON it reads as the option's default.)
func durationOption[M any](prefix string, field func(*M) *caddy.Duration) option[M] {
	return func(m *M, d *caddyfile.Dispenser) error {
		name := d.Val()
		v, err := oneValue(d, prefix)
		if err != nil {
			return err
		}
		dur, err := caddy.ParseDuration(v)
		if err != nil {
			return d.Errf("%s%s: %v", prefix, name, err)
		}
		if dur <= 0 {
			return d.Errf("%s%s: %v would read as the default; want a positive duration", prefix, name, dur)
		}
		*field(m) = caddy.Duration(dur)
		return nil
	}
}
