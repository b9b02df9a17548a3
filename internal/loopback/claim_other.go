//go:build !unix

package loopback

// claim takes every port: only unix systems share them out among
// processes (claim_unix.go).
func claim(int) (bool, error) { return true, nil }
