//go:build unix

package loopback

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// claims are the lock files of the ports this process has handed out,
// held open (and locked) until it exits.
var claims struct {
	sync.Mutex
	files []*os.File
}

// claim takes port for this process among every process of the project's
// tests and benchmarks (a lock file in the temporary directory, held until
// the process exits), and reports whether it could: a port another of
// them handed out is theirs, even in the moment between their probe
// closing it and their server binding it. (Caddy binds with SO_REUSEPORT,
// so two Caddy processes given one port would both listen on it, and
// each get some of its connections.)
func claim(port int) (bool, error) {
	// One directory per user: another user's lock files are not ours to
	// open.
	dir := filepath.Join(os.TempDir(), "streamlimit-ports-"+strconv.Itoa(os.Getuid()))
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return false, err
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, err
	}
	claims.Lock()
	claims.files = append(claims.files, f)
	claims.Unlock()
	return true, nil
}
