package wamp

import (
	"strings"
	"testing"
)

func TestPeekType(t *testing.T) {
	for _, c := range []struct {
		in   string
		code int
		ok   bool
	}{
		{`[2,"c"]`, 2, true},
		{" \n[ 48 , 1]", 48, true},
		{`[6]`, 6, true},
		{`[0,1]`, 0, true},
		{`[255,1]`, 255, true},
		{`[256,1]`, 0, false},
		{`[02,1]`, 0, false},
		{`[2.0,1]`, 0, false},
		{`[-2,1]`, 0, false},
		{`["2",1]`, 0, false},
		{`{"op":2}`, 0, false},
		{`[2`, 0, false},
		{``, 0, false},
		{`[1234567,1]`, 0, false},
	} {
		code, ok := PeekType([]byte(c.in))
		if code != c.code || ok != c.ok {
			t.Errorf("PeekType(%q) = %d, %v; want %d, %v", c.in, code, ok, c.code, c.ok)
		}
	}
	b := []byte(`[2,"c1","x"]`)
	if n := testing.AllocsPerRun(100, func() { PeekType(b) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// Every type a client may send has a cap; PUBLISH alone is bounded only by
// the message size limit, and RPC stays small.
func TestTypeCaps(t *testing.T) {
	for _, typ := range []V1Type{V1Prefix, V1Call, V1Subscribe, V1Unsubscribe} {
		if n, ok := V1MaxBytes(typ); !ok || n > MaxAuthBytes {
			t.Errorf("v1 type %d: cap %d, %v", typ, n, ok)
		}
	}
	for _, typ := range []V1Type{V1Welcome, V1CallResult, V1CallError, V1Event, 99} {
		if _, ok := V1MaxBytes(typ); ok {
			t.Errorf("v1 server type %d accepted", typ)
		}
	}
	if n, _ := V1MaxBytes(V1Call); n != MaxCallBytes {
		t.Errorf("CALL cap %d", n)
	}
	for _, typ := range []V2Type{V2Hello, V2Authenticate, V2Abort, V2Goodbye, V2Subscribe, V2Unsubscribe, V2Call, V2Register} {
		if n, ok := V2MaxBytes(typ); !ok || n > MaxAuthBytes {
			t.Errorf("v2 type %d: cap %d, %v", typ, n, ok)
		}
	}
	for _, typ := range []V2Type{V2Welcome, V2Challenge, V2Error, V2Event, V2Subscribed, 99} {
		if _, ok := V2MaxBytes(typ); ok {
			t.Errorf("v2 server type %d accepted", typ)
		}
	}
	// A seed topic at its cap fits a SUBSCRIBE.
	seed := `[5,"` + strings.Repeat("x", MaxSeedBytes+200) + `"]`
	if n, _ := V1MaxBytes(V1Subscribe); len(seed) > n {
		t.Errorf("SUBSCRIBE cap %d below a seed topic message of %d", n, len(seed))
	}
}

func TestPrefixesBytes(t *testing.T) {
	var p Prefixes
	if err := p.Set("a", "http://x/"); err != nil {
		t.Fatal(err)
	}
	if err := p.Set("bb", "http://y/"); err != nil {
		t.Fatal(err)
	}
	want := 1 + 9 + 2 + 9 + 2*PrefixEntryBytes
	if p.Bytes() != want {
		t.Fatalf("Bytes %d, want %d", p.Bytes(), want)
	}
	if err := p.Set("a", "http://longer/"); err != nil {
		t.Fatal(err)
	}
	if p.Bytes() != want+5 {
		t.Fatalf("Bytes after replacing %d, want %d", p.Bytes(), want+5)
	}
	if err := p.Set("c", strings.Repeat("x", MaxURIBytes+1)); err == nil || p.Bytes() != want+5 {
		t.Fatalf("refused Set changed Bytes to %d (err %v)", p.Bytes(), err)
	}
}
