package manifest

import (
	"net"
	"net/url"
	"strings"
)

// Resolve is where r points, given the URL the manifest itself was fetched
// from (after redirects: players resolve against the final URL).
func (r Ref) Resolve(manifest *url.URL) (*url.URL, error) {
	base := manifest
	if r.Base != "" {
		b, err := Resolve(manifest, r.Base)
		if err != nil {
			return nil, err
		}
		base = b
	}
	return Resolve(base, r.URI)
}

// Resolve resolves a manifest URI against a base URL the way players do
// (RFC 3986): ../ climbs, an absolute path replaces the path, an absolute
// URL replaces everything, and a relative URI does not inherit the base's
// query string.
func Resolve(base *url.URL, ref string) (*url.URL, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return nil, err
	}
	return base.ResolveReference(u), nil
}

// SameHost reports whether u is an http or https URL on one of hosts. A
// host without a port matches any port; with one, only that port; a
// leading "*." matches any subdomain. Other schemes (skd:// FairPlay keys,
// data: URIs) never match: they are not fetched from the origin.
func SameHost(u *url.URL, hosts []string) bool {
	if u == nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false
	}
	name := strings.ToLower(u.Hostname())
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		hn, port, err := net.SplitHostPort(h)
		if err != nil { // no port
			hn, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), ""
		}
		if port != "" && port != effectivePort(u) {
			continue
		}
		if rest, ok := strings.CutPrefix(hn, "*."); ok {
			if strings.HasSuffix(name, "."+rest) {
				return true
			}
		} else if name == hn {
			return true
		}
	}
	return false
}

// effectivePort is u's port, or its scheme's default when it names none,
// so that "example.com:443" matches https://example.com/.
func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}
