package lease

import (
	"time"

	"github.com/google/uuid"
)

const ttl = 30 * time.Second

// id names a stream in a test by a word; stores take canonical UUIDs.
func id(name string) string { return uuid.NewSHA1(uuid.Nil, []byte(name)).String() }
