package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// Limit is a stream limit: a whole number, or a placeholder that expands to
// one per request (per-plan limits set by an auth layer). In JSON it is a
// number, or a string holding a placeholder.
type Limit string

// MarshalJSON writes a fixed limit as a number, a placeholder as a string.
func (l Limit) MarshalJSON() ([]byte, error) {
	if n, err := strconv.Atoi(string(l)); err == nil {
		return json.Marshal(n)
	}
	return json.Marshal(string(l))
}

// UnmarshalJSON accepts a number or a string; null is no limit given (the
// default), as an absent field is.
func (l *Limit) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*l = ""
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err == nil {
		*l = Limit(strconv.Itoa(n))
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("limit: want a whole number or a placeholder string, got %s", b)
	}
	*l = Limit(s)
	return nil
}

// validate rejects a limit that can never work: a negative number, or text
// that is neither a number nor holds a placeholder.
func (l Limit) validate() error {
	if l == "" {
		return nil
	}
	if strings.Contains(string(l), "{") {
		return nil
	}
	if _, err := parseLimit(string(l)); err != nil {
		return fmt.Errorf("limit: %v", err)
	}
	return nil
}

// resolve expands the limit for one request. A placeholder that expands
// to nothing (no plan header, say) gives the default limit.
func (l Limit) resolve(repl *caddy.Replacer) (int, error) {
	s := string(l)
	if strings.Contains(s, "{") {
		s = repl.ReplaceAll(s, "")
		if strings.TrimSpace(s) == "" {
			return DefaultLimit, nil
		}
	}
	return parseLimit(s)
}

func parseLimit(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	if n < 0 {
		return 0, fmt.Errorf("%d is negative", n)
	}
	return n, nil
}
