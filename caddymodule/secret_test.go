package caddymodule

import (
	"context"
	"testing"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
	"github.com/streamlimit/caddy-streamlimit/lease"
)

// TestSharedSecretSurvivesLostRedisData: after Redis loses its data, an
// instance that remembers the secret puts it back, and one that meets ids
// of a secret installed meanwhile adopts it without refusing its own.
func TestSharedSecretSurvivesLostRedisData(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.Client(t)
	store, _ := lease.NewRedisStore(client, lease.RedisOptions{})
	z := &zone{name: "z", store: store}
	ctx := context.Background()
	key := lease.Key{Zone: "z", User: "alice"}

	first, err := z.sharedIDSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := lease.NewID(first, key)

	// Redis loses its data; another instance installs a new secret.
	client.FlushAll(ctx)
	other, _ := store.SharedSecret(ctx, lease.NewSecret())
	after := lease.NewID(other, key)

	if z.anySecret(func(s []byte) bool { return lease.VerifyID(s, key, after) }) {
		t.Fatal("an id of an unknown secret verified")
	}
	if changed, err := z.refreshIDSecret(ctx); err != nil || !changed {
		t.Fatalf("refresh: %v %v", changed, err)
	}
	if !z.anySecret(func(s []byte) bool { return lease.VerifyID(s, key, after) }) || !z.anySecret(func(s []byte) bool { return lease.VerifyID(s, key, before) }) {
		t.Fatal("after the refresh, ids of either secret must verify")
	}

	// Redis loses its data again, and nobody else is there: our secret goes
	// back in.
	client.FlushAll(ctx)
	z.idSecretRead = z.idSecretRead.Add(-2e9)
	if _, err := z.refreshIDSecret(ctx); err != nil {
		t.Fatal(err)
	}
	if kept, _ := client.Get(ctx, lease.DefaultKeyPrefix+"secret").Result(); kept != string(other) {
		t.Fatal("the remembered secret was not put back into Redis")
	}
}
