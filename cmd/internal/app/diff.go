package app

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/portcullis-gw/portcullis/gateway/config"
)

// Diff returns the keys whose value differs between old and next, as
// dotted paths the way the file spells them (limits.msg_rate.rate), in the
// order of the config. A list is one key: topics, origins, alerting.rules.
func Diff(old, next *config.Config) []string {
	var out []string
	diffValue(reflect.ValueOf(*old), reflect.ValueOf(*next), "", &out)
	return out
}

func diffValue(a, b reflect.Value, prefix string, out *[]string) {
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("yaml")
		if tag == "" || !t.Field(i).IsExported() {
			continue
		}
		key := prefix + tag
		fa, fb := a.Field(i), b.Field(i)
		if fa.Kind() == reflect.Struct && fa.Type() != reflect.TypeOf(struct{}{}) {
			diffValue(fa, fb, key+".", out)
			continue
		}
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			*out = append(*out, key)
		}
	}
}

// liveKeys are the keys a reload applies without a restart; a key below
// one of them (alerting.smtp.host below alerting) is live too. Every other
// key needs a restart: a key added to the config is refused live until it
// is listed here with the code that applies it.
var liveKeys = []string{
	// The gateway's rules (gateway.Server.Reload).
	"origins", "allow_missing_origin", "trusted_proxies", "client_ip_header", "topics", "default",
	"limits.max_frame_bytes", "limits.handshake_timeout", "limits.ping_interval",
	"limits.write_queue_bytes", "limits.write_stall_timeout", "limits.max_subscriptions_per_conn",
	"limits.msg_rate", "limits.message_timeout",
	// The static lists (the ban pipeline's list switch).
	"bans.allow", "bans.block", "bans.block_files",
	// The certificates, re-read on every reload (but see tlsSwitches).
	"tls.cert_file", "tls.key_file", "admin.tls",
	// The rest.
	"tokens.ttl", "alerting", "log_level", "shutdown.drain",
}

// isLive reports whether key can change without a restart.
func isLive(key string) bool {
	for _, l := range liveKeys {
		if key == l || strings.HasPrefix(key, l+".") {
			return true
		}
	}
	return false
}

// needsRestart returns the keys of changed that only a restart applies.
func needsRestart(changed []string) []string {
	var out []string
	for _, k := range changed {
		if !isLive(k) {
			out = append(out, k)
		}
	}
	return out
}

// tlsSwitches are the keys whose change turns TLS on or off on a
// listener, which needs a restart although the certificate keys are live:
// the listener would change its protocol under its clients.
func tlsSwitches(old, next *config.Config) []string {
	var out []string
	if (old.TLS.CertFile == "") != (next.TLS.CertFile == "") {
		out = append(out, "tls.cert_file")
	}
	if (old.Admin.TLS.CertFile == "") != (next.Admin.TLS.CertFile == "") {
		out = append(out, "admin.tls.cert_file")
	}
	return out
}

// restartKeys are the keys of changed (old to next) that only a restart
// applies.
func restartKeys(old, next *config.Config, changed []string) []string {
	return append(needsRestart(changed), tlsSwitches(old, next)...)
}

// keySet is a set of changed keys.
type keySet []string

// any reports whether a key of s is one of keys or below one.
func (s keySet) any(keys ...string) bool {
	return slices.ContainsFunc(s, func(k string) bool {
		for _, p := range keys {
			if k == p || strings.HasPrefix(k, p+".") {
				return true
			}
		}
		return false
	})
}

// describe is the value of key in c for a message, e.g. `":8080"`; lists
// and sections are named, not printed.
func describe(c *config.Config, key string) string {
	v := reflect.ValueOf(*c)
	for _, part := range strings.Split(key, ".") {
		f, ok := fieldByTag(v, part)
		if !ok {
			return "?"
		}
		v = f
	}
	switch v.Kind() {
	case reflect.String:
		return fmt.Sprintf("%q", v.String())
	case reflect.Slice, reflect.Map, reflect.Struct, reflect.Pointer:
		return "(" + v.Type().String() + ")"
	}
	return fmt.Sprint(v.Interface())
}

func fieldByTag(v reflect.Value, tag string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Tag.Get("yaml") == tag {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// restartError names the keys that changed but need a restart.
func restartError(old, next *config.Config, keys []string) error {
	var parts []string
	for _, k := range keys {
		from, to := describe(old, k), describe(next, k)
		if strings.HasPrefix(from, "(") {
			parts = append(parts, k)
			continue
		}
		parts = append(parts, fmt.Sprintf("%s (%s to %s)", k, from, to))
	}
	return fmt.Errorf("%s changed, which needs a restart: nothing of this reload was applied, the old config stays in force",
		strings.Join(parts, ", "))
}

// firstKey is the config key an error names, as the loader and the
// builders spell it ("FILE:LINE:COL: key: message", "key: message");
// empty when it names none.
func firstKey(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	var ce config.Errors
	if errors.As(err, &ce) {
		// FILE:LINE:COL: key: message — the key follows the position.
		parts := strings.SplitN(msg, ": ", 3)
		if len(parts) == 3 && !strings.ContainsRune(parts[1], ' ') {
			return parts[1]
		}
		return ""
	}
	if k, _, ok := strings.Cut(msg, ": "); ok && !strings.ContainsAny(k, " /") {
		return k
	}
	return ""
}
