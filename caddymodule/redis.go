package caddymodule

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

func init() {
	caddy.RegisterModule(RedisStore{})
}

// quietRedisLog routes go-redis's own log to Caddy's at debug level: it
// prints every failed dial to stderr, a flood during an outage that the
// handler already logs once, sampled. go-redis has only a process-wide
// logger (redis.SetLogger; no per-client option), so it is set once, and
// only when a config uses this store, not in init: a binary that merely
// includes the plugin keeps go-redis's default for other plugins.
var quietRedisLog sync.Once

type redisLogger struct{}

func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := caddy.Log().Named("stream_limit.redis").Check(zapcore.DebugLevel, fmt.Sprintf(format, v...)); ce != nil {
		ce.Write()
	}
}

// DefaultRedisTimeout bounds each Redis call unless `timeout` says otherwise.
const DefaultRedisTimeout = 500 * time.Millisecond

// MinRedisTimeout is the shortest timeout accepted: below it no call to a
// real Redis, even on loopback, can be relied on to finish.
const MinRedisTimeout = 10 * time.Millisecond

// redisClients holds one client per distinct Redis config, shared by every
// zone that uses it and kept across config reloads.
var redisClients = caddy.NewUsagePool()

// RedisStore keeps leases in Redis, shared by every Caddy instance that
// points at the same Redis and key prefix: standalone (one address),
// Cluster (several addresses) or Sentinel (the sentinels' addresses and
// master_name). Every string option accepts placeholders such as {env.*}.
type RedisStore struct {
	// Addresses are host:port pairs. One: a standalone server; several: a
	// Cluster's seed nodes; with MasterName: the sentinels. Default:
	// ["localhost:6379"].
	Addresses []string `json:"addresses,omitempty"`
	// Username and Password authenticate to Redis (ACL or requirepass).
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// DB selects the database; standalone and Sentinel only. Default 0.
	DB int `json:"db,omitempty"`
	// Cluster treats a single address as a Cluster's configuration endpoint
	// (as managed services offer); several addresses always mean a Cluster.
	Cluster bool `json:"cluster,omitempty"`
	// MasterName, when set, makes Addresses sentinels that name the master.
	MasterName string `json:"master_name,omitempty"`
	// SentinelUsername and SentinelPassword authenticate to the sentinels.
	SentinelUsername string `json:"sentinel_username,omitempty"`
	SentinelPassword string `json:"sentinel_password,omitempty"`
	// TLS, when set, connects with TLS.
	TLS *RedisTLS `json:"tls,omitempty"`
	// KeyPrefix starts every key. Default "streamlimit:". No braces.
	KeyPrefix string `json:"key_prefix,omitempty"`
	// Timeout bounds each call, retries included; past it the handler's
	// on_store_error applies. Default 500ms; at least 10ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// PoolSize is the most connections per node. Default: go-redis's (10
	// per CPU).
	PoolSize int `json:"pool_size,omitempty"`
}

// RedisTLS configures TLS to Redis.
type RedisTLS struct {
	// ServerName checks the server's certificate; default: the host dialled.
	ServerName string `json:"server_name,omitempty"`
	// CA is a PEM file of roots to trust instead of the system's.
	CA string `json:"ca,omitempty"`
	// Cert and Key are a PEM client certificate and key, for mutual TLS.
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
	// InsecureSkipVerify skips certificate checks; for tests only.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (RedisStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "stream_limit.stores.redis",
		New: func() caddy.Module { return new(RedisStore) },
	}
}

// Provision expands placeholders and sets defaults.
func (r *RedisStore) Provision(caddy.Context) error {
	quietRedisLog.Do(func() { redis.SetLogger(redisLogger{}) })
	repl := caddy.NewReplacer()
	expand := func(s *string) { *s = repl.ReplaceAll(*s, "") }
	for i := range r.Addresses {
		expand(&r.Addresses[i])
	}
	for _, s := range []*string{&r.Username, &r.Password, &r.MasterName, &r.SentinelUsername, &r.SentinelPassword, &r.KeyPrefix} {
		expand(s)
	}
	if r.TLS != nil {
		for _, s := range []*string{&r.TLS.ServerName, &r.TLS.CA, &r.TLS.Cert, &r.TLS.Key} {
			expand(s)
		}
	}
	if len(r.Addresses) == 0 {
		r.Addresses = []string{"localhost:6379"}
	}
	if r.KeyPrefix == "" {
		r.KeyPrefix = lease.DefaultKeyPrefix
	}
	if r.Timeout == 0 {
		r.Timeout = caddy.Duration(DefaultRedisTimeout)
	}
	return nil
}

// Validate rejects a config that cannot work, naming the option.
func (r *RedisStore) Validate() error {
	for _, a := range r.Addresses {
		if a == "" {
			return fmt.Errorf("store redis: address: empty (an unset {env.*}?)")
		}
	}
	switch {
	case time.Duration(r.Timeout) < MinRedisTimeout:
		// Shorter, every call fails, and with on_store_error allow that is
		// no limit at all.
		return fmt.Errorf("store redis: timeout: %v is shorter than the minimum %v", time.Duration(r.Timeout), MinRedisTimeout)
	case r.DB < 0:
		return fmt.Errorf("store redis: db: must not be negative")
	case r.PoolSize < 0:
		return fmt.Errorf("store redis: pool_size: must not be negative")
	case r.TLS != nil && (r.TLS.Cert == "") != (r.TLS.Key == ""):
		return fmt.Errorf("store redis: tls: cert and key go together")
	}
	if _, err := lease.NewRedisStore(nil, lease.RedisOptions{KeyPrefix: r.KeyPrefix}); err != nil {
		return fmt.Errorf("store redis: key_prefix: %v", err)
	}
	return nil
}

// Identity implements StoreModule: configs that differ in anything open
// different clients.
func (r *RedisStore) Identity() string {
	b, _ := json.Marshal(r)
	return "redis:" + string(b)
}

// CallTimeout implements StoreModule.
func (r *RedisStore) CallTimeout() time.Duration { return time.Duration(r.Timeout) }

// Open implements StoreModule: it shares the client of an identical config.
func (r *RedisStore) Open(onExpire func(lease.Key, lease.Lease)) (lease.Store, error) {
	id := r.Identity()
	val, _, err := redisClients.LoadOrNew(id, func() (caddy.Destructor, error) {
		opts, err := r.clientOptions()
		if err != nil {
			return nil, err
		}
		return redisClient{redis.NewUniversalClient(opts)}, nil
	})
	if err != nil {
		return nil, err
	}
	s, err := lease.NewRedisStore(val.(redisClient).UniversalClient, lease.RedisOptions{KeyPrefix: r.KeyPrefix, OnExpire: onExpire})
	if err != nil {
		redisClients.Delete(id)
		return nil, err
	}
	return pooledRedisStore{s, id}, nil
}

func (r *RedisStore) clientOptions() (*redis.UniversalOptions, error) {
	timeout := time.Duration(r.Timeout)
	opts := &redis.UniversalOptions{
		Addrs:            r.Addresses,
		Username:         r.Username,
		Password:         r.Password,
		DB:               r.DB,
		MasterName:       r.MasterName,
		IsClusterMode:    r.Cluster,
		SentinelUsername: r.SentinelUsername,
		SentinelPassword: r.SentinelPassword,
		PoolSize:         r.PoolSize,
		DialTimeout:      timeout,
		ReadTimeout:      timeout,
		WriteTimeout:     timeout,
		// The call's context bounds retries too, so a slow Redis costs a
		// request at most the timeout.
		ContextTimeoutEnabled: true,
		MaxRetries:            1,
	}
	if r.TLS != nil {
		cfg := &tls.Config{ServerName: r.TLS.ServerName, InsecureSkipVerify: r.TLS.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
		if r.TLS.CA != "" {
			pem, err := os.ReadFile(r.TLS.CA)
			if err != nil {
				return nil, fmt.Errorf("store redis: tls ca: %v", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("store redis: tls ca: no certificate in %s", r.TLS.CA)
			}
		}
		if r.TLS.Cert != "" {
			cert, err := tls.LoadX509KeyPair(r.TLS.Cert, r.TLS.Key)
			if err != nil {
				return nil, fmt.Errorf("store redis: tls cert: %v", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts.TLSConfig = cfg
	}
	return opts, nil
}

// redisClient is a pooled client; the last user closes it.
type redisClient struct{ redis.UniversalClient }

func (c redisClient) Destruct() error { return c.Close() }

// pooledRedisStore gives its client back to the pool on Close.
type pooledRedisStore struct {
	*lease.RedisStore
	clientID string
}

func (s pooledRedisStore) Close() error {
	_, err := redisClients.Delete(s.clientID)
	return err
}

// UnmarshalCaddyfile sets up the Redis store. Syntax:
//
//	store redis {
//		address           <host:port>...   # several: cluster, or sentinels with master_name
//		cluster                            # one address that is a Cluster endpoint
//		username          <name>
//		password          <password>
//		db                <n>
//		master_name       <name>            # Sentinel
//		sentinel_username <name>
//		sentinel_password <password>
//		tls {
//			server_name          <name>
//			ca                   <pem file>
//			cert                 <pem file>
//			key                  <pem file>
//			insecure_skip_verify
//		}
//		key_prefix        <prefix>         # default streamlimit:
//		timeout           <duration>       # default 500ms
//		pool_size         <n>
//	}
//
// `store redis <host:port>...` with no block is short for the addresses.
func (r *RedisStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the store's name
	r.Addresses = append(r.Addresses, d.RemainingArgs()...)
	return parseBlock(d, r, redisOptions, "store redis: ", false)
}

// redisOptions are the Caddyfile options of the Redis store: the one list
// of their names.
var redisOptions = map[string]option[RedisStore]{
	"address":           addressOption,
	"addresses":         addressOption,
	"username":          textOption(redisPrefix, func(r *RedisStore) *string { return &r.Username }),
	"password":          textOption(redisPrefix, func(r *RedisStore) *string { return &r.Password }),
	"master_name":       textOption(redisPrefix, func(r *RedisStore) *string { return &r.MasterName }),
	"sentinel_username": textOption(redisPrefix, func(r *RedisStore) *string { return &r.SentinelUsername }),
	"sentinel_password": textOption(redisPrefix, func(r *RedisStore) *string { return &r.SentinelPassword }),
	"key_prefix":        textOption(redisPrefix, func(r *RedisStore) *string { return &r.KeyPrefix }),
	"db":                numberOption(redisPrefix, func(r *RedisStore) *int { return &r.DB }),
	"pool_size":         numberOption(redisPrefix, func(r *RedisStore) *int { return &r.PoolSize }),
	"timeout":           durationOption(redisPrefix, func(r *RedisStore) *caddy.Duration { return &r.Timeout }),
	"cluster":           flagOption(redisPrefix, func(r *RedisStore) *bool { return &r.Cluster }),
	"tls": func(r *RedisStore, d *caddyfile.Dispenser) error {
		if d.NextArg() {
			return d.Errf("store redis: tls: takes a block, not %q", d.Val())
		}
		r.TLS = new(RedisTLS)
		return parseBlock(d, r.TLS, redisTLSOptions, "store redis: tls: ", false)
	},
}

const redisPrefix = "store redis: "

var redisTLSOptions = map[string]option[RedisTLS]{
	"server_name":          textOption("store redis: tls: ", func(t *RedisTLS) *string { return &t.ServerName }),
	"ca":                   textOption("store redis: tls: ", func(t *RedisTLS) *string { return &t.CA }),
	"cert":                 textOption("store redis: tls: ", func(t *RedisTLS) *string { return &t.Cert }),
	"key":                  textOption("store redis: tls: ", func(t *RedisTLS) *string { return &t.Key }),
	"insecure_skip_verify": flagOption("store redis: tls: ", func(t *RedisTLS) *bool { return &t.InsecureSkipVerify }),
}

func addressOption(r *RedisStore, d *caddyfile.Dispenser) error {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("store redis: %s: want host:port", name)
	}
	r.Addresses = append(r.Addresses, args...)
	return nil
}

// Interface guards.
var (
	_ StoreModule           = (*RedisStore)(nil)
	_ caddy.Provisioner     = (*RedisStore)(nil)
	_ caddy.Validator       = (*RedisStore)(nil)
	_ caddyfile.Unmarshaler = (*RedisStore)(nil)
)
