package lease

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"hash"
	"strings"
	"sync"
)

// Stream ids are UUIDs (version 8, "custom") that carry their own proof of
// owner: 60 random bits, then 62 bits of an HMAC of the zone, the user and
// those random bits under a secret the proxies share. A proxy can tell at
// once, with no store call, whether an id was issued to this user: a
// forged id, or another user's, is refused, while the user's own lapsed id
// can be re-admitted.

// SecretLen is the length of the secrets NewID and VerifyID take.
const SecretLen = 32

// NewSecret returns a fresh random secret.
func NewSecret() []byte {
	b := make([]byte, SecretLen)
	rand.Read(b)
	return b
}

// NewID issues a stream id for key.
func NewID(secret []byte, key Key) string {
	var u [16]byte
	rand.Read(u[:8])
	u[6] = u[6]&0x0f | 0x80 // version 8
	sealID(secret, key, &u)
	return formatUUID(u)
}

// VerifyID reports whether id (a canonical UUID) was issued for key under
// secret.
func VerifyID(secret []byte, key Key, id string) bool {
	u, err := parseID(id)
	if err != nil || u[6]>>4 != 8 {
		return false
	}
	want := [16]byte(u)
	sealID(secret, key, &want)
	return subtle.ConstantTimeCompare(u[8:], want[8:]) == 1
}

// Tag returns the MAC under secret of the parts, each length-prefixed so
// that no two lists of parts share their bytes, in dst's first len(dst)
// bytes (at most 32). Callers bind other things to ids with it (the
// handler binds a stream's id to the paths it may be used on).
func Tag(dst []byte, secret []byte, parts ...string) {
	m, pool := macFor(secret)
	defer pool.Put(m)
	var n [4]byte
	for _, p := range parts {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		m.Write(n[:])
		m.Write([]byte(p))
	}
	var sum [sha256.Size]byte
	copy(dst, m.Sum(sum[:0]))
}

// macs keeps, per secret, keyed HMACs to reuse: building one costs more
// than using it, and there are only ever a few secrets.
var macs sync.Map // string(secret) -> *sync.Pool of hash.Hash

func macFor(secret []byte) (hash.Hash, *sync.Pool) {
	p, ok := macs.Load(string(secret))
	if !ok {
		s := bytes.Clone(secret)
		p, _ = macs.LoadOrStore(string(s), &sync.Pool{New: func() any { return hmac.New(sha256.New, s) }})
	}
	pool := p.(*sync.Pool)
	m := pool.Get().(hash.Hash)
	m.Reset()
	return m, pool
}

// sealID fills bytes 8..15 of u with the MAC of key and u[0:8].
func sealID(secret []byte, key Key, u *[16]byte) {
	m, pool := macFor(secret)
	defer pool.Put(m)
	// Length-prefixed, so that no (zone, user) pair reads as another.
	var n [2 * binary.MaxVarintLen64]byte
	m.Write(binary.AppendUvarint(binary.AppendUvarint(n[:0], uint64(len(key.Zone))), uint64(len(key.User))))
	m.Write([]byte(key.Zone))
	m.Write([]byte(key.User))
	m.Write(u[:8])
	var buf [sha256.Size]byte
	sum := m.Sum(buf[:0])
	copy(u[8:], sum[:8])
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
}

func formatUUID(u [16]byte) string {
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[b>>4], hex[b&0x0f])
	}
	return string(out)
}

// CanonicalID returns id in the one form the stores keep and give back: a
// hyphenated UUID in lower case. Upper-case hex is accepted and lowered;
// anything else is not an id (ok false). It allocates only to lower.
func CanonicalID(id string) (canonical string, ok bool) {
	if len(id) != 36 {
		return "", false
	}
	lower := true
	for i := range len(id) {
		c := id[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return "", false
			}
		case '0' <= c && c <= '9' || 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			lower = false
		default:
			return "", false
		}
	}
	if lower {
		return id, true
	}
	return strings.ToLower(id), true
}
